"""The dtml wheel side by side with the Python packages users reach for,
in one process, on the masks of `crates/dtml-edt/bench/peers.py`: the
112x112x80 training patch and the 320x320x96 pair (spacing 2.5, 0.625,
0.625 mm in numpy order).

    cargo xtask bench python        # builds the wheel, installs the peers, runs this

Signed distance map: dtml.signed_distance against the `edt` package
(edt.sdf and two edt.edt), scipy (two distance_transform_edt) and, when
importable, MONAI. HD95: dtml.hd95 against medpy, DeepMind's
surface-distance, seg-metrics, mikan-rs and, when importable, MONAI's
compute_hausdorff_distance; each peer's value is printed beside the two
definitions dtml offers (their conventions differ). Prints the machine,
the wheel's kernel tier, median wall times and the ratios.
"""

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def edt_peers():
    """The masks and timer of dtml-edt's own peer bench, so both agree."""
    spec = importlib.util.spec_from_file_location("peers", ROOT / "crates/dtml-edt/bench/peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_flags():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return " ".join(f for f in ["avx512f", "avx2", "fma"] if f in flags)
    return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    th = args.threads
    peers = edt_peers()
    import dtml

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs; {cpu_flags()}); dtml {dtml.__version__}")
    results = []

    def row(size, task, name, fn, reps, value=None):
        ms = peers.median_ms(fn, reps)
        results.append(dict(size=size, task=task, name=name, ms=ms, value=value))

    sizes = {
        "112x112x80 patch": (peers.blob((80, 112, 112), 0.57), peers.blob((80, 112, 112), 0.57 * 0.97, 0.04, -0.03)),
        "320x320x96 pair": (peers.blob((96, 320, 320), 0.57), peers.blob((96, 320, 320), 0.57 * 0.97, 0.04, -0.03)),
    }
    sp = (2.5, 0.625, 0.625)
    from scipy.ndimage import distance_transform_edt
    from medpy.metric import binary as medpy

    for size, (ref, pred) in sizes.items():
        reps = args.reps if "patch" in size else max(3, args.reps // 3)
        slow = max(3, reps // 3)
        # Signed distance maps.
        row(size, "signed map", "dtml.signed_distance", lambda: dtml.signed_distance(ref, sp), reps)
        try:
            import edt

            r8 = ref.astype(np.uint8)
            inv8 = (1 - r8).astype(np.uint8)
            row(size, "signed map", f"edt.sdf (parallel={th})", lambda: edt.sdf(r8, anisotropy=sp, parallel=th), reps)
            row(
                size,
                "signed map",
                f"edt: 2x edt.edt (parallel={th})",
                lambda: edt.edt(inv8, anisotropy=sp, parallel=th) - edt.edt(r8, anisotropy=sp, parallel=th),
                reps,
            )
        except ImportError:
            print("edt not installed")
        row(
            size,
            "signed map",
            "scipy: 2x distance_transform_edt",
            lambda: distance_transform_edt(~ref, sampling=sp) - distance_transform_edt(ref, sampling=sp),
            slow,
        )
        # HD95 (pooled, medpy's definition, and the larger directed one).
        pooled = dtml.hd95(pred, ref, sp)
        directed = dtml.hd95(pred, ref, sp, definition="max_directed")
        row(size, "hd95", "dtml.hd95", lambda: dtml.hd95(pred, ref, sp), reps, pooled)
        row(size, "hd95", "medpy.hd95", lambda: medpy.hd95(pred, ref, voxelspacing=sp), slow, medpy.hd95(pred, ref, voxelspacing=sp))
        try:
            from surface_distance import compute_robust_hausdorff, compute_surface_distances

            def deepmind():
                return compute_robust_hausdorff(compute_surface_distances(ref, pred, sp), 95)

            row(size, "hd95", "surface-distance robust_hausdorff(95)", deepmind, slow, deepmind())
        except ImportError:
            print("surface-distance not installed")
        try:
            from seg_metrics import seg_metrics as sm

            r8, p8 = ref.astype(np.uint8), pred.astype(np.uint8)

            def seg():
                out = sm.write_metrics(labels=[1], gdth_img=r8, pred_img=p8, metrics=["hd95"], spacing=sp)
                return float(out[0]["hd95"][0])

            row(size, "hd95", "seg-metrics write_metrics(hd95)", seg, slow, seg())
        except ImportError:
            print("seg-metrics not installed")
        try:
            import mikan

            r8, p8 = ref.astype(np.uint8), pred.astype(np.uint8)

            def mk():
                # mikan-rs takes SimpleITK's (x, y, z) spacing for a numpy (z, y, x) array.
                return float(mikan.ArrayEvaluator(r8, p8, spacing=sp[::-1]).labels(1).metrics("hd95"))

            row(size, "hd95", "mikan-rs ArrayEvaluator hd95", mk, slow, mk())
        except ImportError:
            print("mikan-rs not installed")
        try:
            import torch
            from monai.metrics import compute_hausdorff_distance

            yp = torch.from_numpy(pred[None, None])
            yr = torch.from_numpy(ref[None, None])

            def monai():
                return float(compute_hausdorff_distance(yp, yr, percentile=95, spacing=sp))

            row(size, "hd95", "MONAI compute_hausdorff_distance(95)", monai, slow, monai())
        except ImportError:
            print("MONAI (with torch) not installed")
        print(f"{size}: dtml hd95 pooled (medpy's) {pooled:.4f} mm, max directed (MONAI's) {directed:.4f} mm")

    print(f"\n{'size':18} {'task':10} {'package':40} {'median ms':>10} {'dtml faster':>11} {'value':>8}")
    for r in results:
        dtml_ms = next(x["ms"] for x in results if x["size"] == r["size"] and x["task"] == r["task"] and x["name"].startswith("dtml"))
        ratio = r["ms"] / dtml_ms
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        print(f"{r['size']:18} {r['task']:10} {r['name']:40} {r['ms']:10.2f} {ratio:10.1f}x {value:>8}")
    if args.json:
        args.json.write_text(json.dumps(dict(cpu=cpu_model(), flags=cpu_flags(), results=results), indent=1))


if __name__ == "__main__":
    main()
