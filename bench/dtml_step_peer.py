"""PyTorch CPU peer of dtml's DTML training step (crates/dtml-train/benches/step.rs).

One step = two V-Nets of the UA-MT / DTC / DTML family forward on the whole
batch (labelled half first, channel dropout on), the paper's joint objective
(shared/method.md):
    A, labelled half:  0.5 (BCE + Dice) on the segmentation logits
    B, labelled half:  L1(d_B, SDM target) + Dice(sigmoid(-1500 d_B), y)
    all samples:       lambda * mean((sigmoid(-1500 d_B) - sigmoid(seg_A))^2)
one backward pass and SGD (momentum 0.9, weight decay 1e-4) on both nets.

Run: /work/torchenv/bin/python bench/dtml_step_peer.py --size demo|paper
     [--steps N] [--warmup N] [--threads 2]
  demo:  width 8,  batch 4 (2 labelled + 2 unlabelled), patch 48x48x32
  paper: width 16, batch 2 (1 labelled + 1 unlabelled), patch 112x112x80
Prints one JSON line: median step time, it/s and peak RSS of this process
(resource.getrusage ru_maxrss, which includes the torch import itself).
Run one size per process so the peak RSS belongs to that size.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "data-fixtures", "vnet"))
from make_vnet_fixture import VNet  # noqa: E402

SIZES = {
    # width, labelled, unlabelled, patch (x, y, z)
    "demo": (8, 2, 2, (48, 48, 32)),
    "paper": (16, 1, 1, (112, 112, 80)),
}
DEFAULT_STEPS = {"demo": (3, 15), "paper": (1, 3)}


def dice_loss(p, y):
    inter = (p * y).sum()
    den = (p * p).sum() + (y * y).sum()
    return 1.0 - (2.0 * inter + 1e-5) / (den + 1e-5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="demo")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, nl, nu, (px, py, pz) = SIZES[args.size]
    warmup, steps = DEFAULT_STEPS[args.size]
    warmup = args.warmup if args.warmup is not None else warmup
    steps = args.steps if args.steps is not None else steps

    torch.manual_seed(1337)
    net_a = VNet(1, width, 1)
    net_b = VNet(1, width, 1)
    net_a.train()
    net_b.train()
    params = list(net_a.parameters()) + list(net_b.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

    n = nl + nu
    # The reference pipeline's layout: (N, C, x, y, z).
    image = torch.randn(n, 1, px, py, pz)
    gx, gy, gz = torch.meshgrid(
        torch.arange(px, dtype=torch.float32),
        torch.arange(py, dtype=torch.float32),
        torch.arange(pz, dtype=torch.float32),
        indexing="ij",
    )
    r = ((gx - px / 2) ** 2 + (gy - py / 2) ** 2 + (gz - pz / 2) ** 2).sqrt()
    radius = min(px, py, pz) / 3
    label = (r < radius).float().expand(nl, 1, px, py, pz).contiguous()
    sdm_target = ((r - radius) / r.max()).clamp(-1, 1).expand(nl, 1, px, py, pz).contiguous()
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
        return loss.item()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "torch": torch.__version__,
                "size": args.size,
                "width": width,
                "batch": n,
                "patch": [px, py, pz],
                "threads": torch.get_num_threads(),
                "steps": steps,
                "median_s": round(med, 4),
                "min_s": round(min(times), 4),
                "it_per_s": round(1.0 / med, 4),
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
