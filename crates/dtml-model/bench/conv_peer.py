"""PyTorch CPU peer of benches/conv.rs: a 3x3x3 conv, 32 -> 32 channels,
padding 1, on a (2, 32, 40, 56, 56) input, forward and forward+backward
(gradients of input and weight, backward seeded with ones), and the
backward kernels alone (aten.convolution_backward).

Run: /work/torchenv/bin/python crates/dtml-model/bench/conv_peer.py [threads]
Prints the median and minimum of 10 timed runs after 3 warm-up runs.
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(7)
x = torch.randn(2, 32, 40, 56, 56, requires_grad=True)
w = (torch.randn(32, 32, 3, 3, 3) * 0.06).requires_grad_(True)


def fwd():
    with torch.no_grad():
        return F.conv3d(x, w, padding=1)


def fwd_bwd():
    x.grad = None
    w.grad = None
    y = F.conv3d(x, w, padding=1)
    y.backward(torch.ones_like(y))
    return x.grad, w.grad


dy = torch.randn(2, 32, 40, 56, 56)


def bwd_kernels():
    # The backward kernels alone (input and weight gradients), no autograd.
    with torch.no_grad():
        return torch.ops.aten.convolution_backward(
            dy, x, w, None, [1, 1, 1], [1, 1, 1], [1, 1, 1], False, [0, 0, 0], 1, [True, True, False]
        )


def timeit(fn, warm=3, runs=10):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
for name, fn in [("forward", fwd), ("forward_backward", fwd_bwd), ("backward_kernels_only", bwd_kernels)]:
    med, best = timeit(fn)
    print(f"{name:18s} median {med * 1e3:8.1f} ms   min {best * 1e3:8.1f} ms")
