"""PyTorch CPU peer of examples/bench_infer.rs: the reference sliding
window (`test_single_case` of the UA-MT / DTC / DTML code, one window per
forward pass) over a whole volume with a seeded V-Net of the same family.

Run: python crates/dtml-train/bench/infer_peer.py [--size 144,144,88]
     [--patch 112,112,80] [--stride 18,18,4] [--width 16] [--repeats 1]
     [--threads N]
Prints one JSON line with the best wall time. `cargo xtask bench infer`
runs it beside the Rust side.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "data-fixtures", "vnet"))
sys.path.insert(0, os.path.join(ROOT, "data-fixtures", "infer"))
from make_vnet_fixture import VNet  # noqa: E402
from make_infer_fixture import test_single_case  # noqa: E402


def triple(s):
    v = [int(p) for p in s.replace("x", ",").split(",")]
    assert len(v) == 3, s
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=triple, default=[144, 144, 88])
    ap.add_argument("--patch", type=triple, default=[112, 112, 80])
    ap.add_argument("--stride", type=triple, default=[18, 18, 4])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.stride[0] != a.stride[1]:
        sys.exit("the reference sliding window takes one x-y stride")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    net = VNet(1, a.width, 1).eval()
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in a.size], indexing="ij")
    image = np.sin(x * 0.1) + np.cos(y * 0.07) + z * 0.01
    image = ((image - image.mean()) / image.std()).astype(np.float32)
    windows = 1
    for n, p, s in zip(a.size, a.patch, a.stride):
        windows *= math.ceil((max(n, p) - p) / s) + 1
    best = math.inf
    for _ in range(max(a.repeats, 1)):
        t = time.perf_counter()
        label_map, _ = test_single_case(net, image, a.stride[0], a.stride[2], a.patch, mode="region")
        best = min(best, time.perf_counter() - t)
    print(json.dumps({
        "impl": "pytorch", "seconds": round(best, 4), "windows": windows, "size": a.size,
        "patch": a.patch, "stride": a.stride, "width": a.width, "batch": 1,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
