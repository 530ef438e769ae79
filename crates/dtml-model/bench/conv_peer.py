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

# The resampling pair and the 1x1 head of benches/conv.rs (group
# "resample"), forward + backward seeded with ones.
torch.manual_seed(9)
xf = torch.randn(2, 16, 80, 112, 112, requires_grad=True)
xs = torch.randn(2, 32, 40, 56, 56, requires_grad=True)
wd = (torch.randn(32, 16, 2, 2, 2) * 0.1).requires_grad_(True)
wu = (torch.randn(32, 16, 2, 2, 2) * 0.1).requires_grad_(True)
w1 = (torch.randn(2, 16, 1, 1, 1) * 0.1).requires_grad_(True)


def fb(fn):
    def run():
        y = fn()
        y.backward(torch.ones_like(y))
    return run


for name, fn in [
    ("down_conv2_16to32_fwd_bwd", fb(lambda: F.conv3d(xf, wd, stride=2))),
    ("up_conv2_32to16_fwd_bwd", fb(lambda: F.conv_transpose3d(xs, wu, stride=2))),
    ("conv1x1_16to2_fwd_bwd", fb(lambda: F.conv3d(xf, w1))),
]:
    med, best = timeit(fn, warm=2, runs=7)
    print(f"{name:26s} median {med * 1e3:8.1f} ms   min {best * 1e3:8.1f} ms")
