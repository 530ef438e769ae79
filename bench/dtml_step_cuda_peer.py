"""PyTorch CUDA peer of dtml's DTML step on a GPU (crates/dtml-train/benches/step.rs
with --cuda 0, the training loop's own step).

One step = two V-Nets of the UA-MT / DTC / DTML family forward on the whole
batch (labelled half first, channel dropout on), the paper's joint objective
(shared/method.md):
    A, labelled half:  0.5 (BCE + Dice) on the segmentation logits
    B, labelled half:  L1(d_B, SDM target) + Dice(sigmoid(-1500 d_B), y)
    all samples:       lambda * mean((sigmoid(-1500 d_B) - sigmoid(seg_A))^2)
one backward pass and SGD (lr 0.01, momentum 0.9, weight decay 1e-4) on both
nets, then loss.item() and a device synchronize (the Rust bench does the same).

Run (from the repository root, on a machine with an NVIDIA GPU):
    python3 bench/dtml_step_cuda_peer.py [--width 16] [--patch 112,112,80]
        [--labelled 2] [--unlabelled 2] [--steps 10] [--warmup 3]
        [--tf32] [--cudnn-benchmark]
Defaults: the paper's size (width 16, patch 112x112x80, batch 4 = 2 + 2),
f32 with TF32 off for both convolutions and matmuls (PyTorch's default
allows TF32 in cuDNN convolutions; --tf32 turns it on for both, as the Rust
bench's --tf32 does), cuDNN heuristics (--cudnn-benchmark times the
algorithms, as torch.backends.cudnn.benchmark = True).
Prints one JSON line: median and min step time, it/s, peak memory allocated
by PyTorch's caching allocator and GPU memory in use (driver: total - free).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "data-fixtures", "vnet"))
from make_vnet_fixture import VNet  # noqa: E402


def dice_loss(p, y):
    inter = (p * y).sum()
    den = (p * p).sum() + (y * y).sum()
    return 1.0 - (2.0 * inter + 1e-5) / (den + 1e-5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--patch", default="112,112,80")
    ap.add_argument("--labelled", type=int, default=2)
    ap.add_argument("--unlabelled", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--cudnn-benchmark", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("dtml_step_cuda_peer: torch.cuda.is_available() is False: no usable GPU")
    dev = torch.device("cuda", 0)
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.backends.cudnn.deterministic = False

    px, py, pz = (int(v) for v in args.patch.split(","))
    nl, n = args.labelled, args.labelled + args.unlabelled
    width = args.width

    torch.manual_seed(1337)
    net_a = VNet(1, width, 1).to(dev).train()
    net_b = VNet(1, width, 1).to(dev).train()
    params = list(net_a.parameters()) + list(net_b.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

    # The reference pipeline's layout: (N, C, x, y, z).
    image = (torch.rand(n, 1, px, py, pz) * 2 - 1).to(dev)
    gx, gy, gz = torch.meshgrid(
        torch.arange(px, dtype=torch.float32),
        torch.arange(py, dtype=torch.float32),
        torch.arange(pz, dtype=torch.float32),
        indexing="ij",
    )
    r = ((gx - px / 2) ** 2 + (gy - py / 2) ** 2 + (gz - pz / 2) ** 2).sqrt()
    radius = min(px, py, pz) / 3
    label = (r < radius).float().expand(nl, 1, px, py, pz).contiguous().to(dev)
    sdm_target = ((r - radius) / r.max()).clamp(-1, 1).expand(nl, 1, px, py, pz).contiguous().to(dev)
    lam = 0.1
    k = 1500.0

    def step():
        d_a, seg_a = net_a(image, dropout=True)
        d_b, seg_b = net_b(image, dropout=True)
        del d_a, seg_b
        seg_l = seg_a[:nl]
        loss_a = 0.5 * (F.binary_cross_entropy_with_logits(seg_l, label) + dice_loss(torch.sigmoid(seg_l), label))
        q_b = torch.sigmoid(-k * d_b)
        loss_b = F.l1_loss(d_b[:nl], sdm_target) + dice_loss(q_b[:nl], label)
        cons = torch.mean((q_b - torch.sigmoid(seg_a)) ** 2)
        loss = loss_a + loss_b + lam * cons
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        v = loss.item()
        torch.cuda.synchronize(dev)
        return v

    for _ in range(args.warmup):
        step()
    torch.cuda.reset_peak_memory_stats(dev)
    times = []
    last = float("nan")
    for _ in range(args.steps):
        t0 = time.perf_counter()
        last = step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    free, total = torch.cuda.mem_get_info(dev)
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "torch": torch.__version__,
                "cudnn": torch.backends.cudnn.version(),
                "gpu": torch.cuda.get_device_name(dev),
                "width": width,
                "batch": n,
                "labelled": nl,
                "patch": [px, py, pz],
                "tf32": args.tf32,
                "cudnn_benchmark": args.cudnn_benchmark,
                "steps": args.steps,
                "median_s": round(med, 4),
                "min_s": round(min(times), 4),
                "it_per_s": round(1.0 / med, 3),
                "peak_allocated_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20),
                "gpu_mem_used_mb": round((total - free) / 2**20),
                "last_loss": round(last, 5),
            }
        )
    )


if __name__ == "__main__":
    main()
