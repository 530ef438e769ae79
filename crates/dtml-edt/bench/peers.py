"""Times the peers of dtml-edt on the same masks as `cargo bench -p dtml-edt`.

Usage (same machine, same thread count as the Rust benches):

    target/pyenv/bin/pip install edt SimpleITK   # bench-only extras
    OMP_NUM_THREADS=2 target/pyenv/bin/python crates/dtml-edt/bench/peers.py [--threads 2]

Prints the median wall time of each peer in milliseconds.
"""

import argparse
import os
import time

import numpy as np


def blob(shape, r, du=0.0, dv=0.0):
    """Smooth blob, ~11 % foreground for r = 0.57 (same formula as benches/edt.rs)."""
    nz, ny, nx = shape
    w = (np.arange(nz) + 0.5) / nz * 2 - 1
    v = (np.arange(ny) + 0.5) / ny * 2 - 1 - dv
    u = (np.arange(nx) + 0.5) / nx * 2 - 1 - du
    W, V, U = np.meshgrid(w, v, u, indexing="ij")
    rr = r * (1 + 0.12 * np.sin(5 * U) * np.cos(4 * V) + 0.08 * np.sin(3 * W + 1))
    return (U * U + V * V + W * W) < rr * rr


def median_ms(f, reps):
    f()  # warm-up
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return 1e3 * float(np.median(t))


def reference_sdm(img_gt):
    """compute_sdf of the DTC/DTML code (scipy + scikit-image)."""
    from scipy.ndimage import distance_transform_edt as distance
    from skimage import segmentation

    img_gt = img_gt.astype(np.uint8)
    out = np.zeros(img_gt.shape)
    for b in range(img_gt.shape[0]):
        posmask = img_gt[b].astype(bool)
        if posmask.any():
            negmask = ~posmask
            posdis = distance(posmask)
            negdis = distance(negmask)
            boundary = segmentation.find_boundaries(posmask, mode="inner").astype(np.uint8)
            sdf = (negdis - np.min(negdis)) / (np.max(negdis) - np.min(negdis)) - (
                posdis - np.min(posdis)
            ) / (np.max(posdis) - np.min(posdis))
            sdf[boundary == 1] = 0
            out[b] = sdf
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=21)
    args = ap.parse_args()
    th = args.threads
    os.environ.setdefault("OMP_NUM_THREADS", str(th))

    from scipy.ndimage import distance_transform_edt

    patch = blob((80, 112, 112), 0.57)
    print(f"patch 112x112x80 foreground fraction {patch.mean():.3f}, threads {th}")
    p8 = patch.astype(np.uint8)
    res = {}
    res["scipy signed map (2x distance_transform_edt, 1 thread)"] = median_ms(
        lambda: distance_transform_edt(~patch) - distance_transform_edt(patch), args.reps
    )
    res["scipy distance_transform_edt (1 transform, 1 thread)"] = median_ms(
        lambda: distance_transform_edt(patch), args.reps
    )
    try:
        import edt

        inv8 = (1 - p8).astype(np.uint8)
        res[f"edt package signed map (2x edt.edt uint8, parallel={th})"] = median_ms(
            lambda: edt.edt(inv8, parallel=th) - edt.edt(p8, parallel=th), args.reps
        )
        res[f"edt package edt.edt (1 transform, parallel={th})"] = median_ms(
            lambda: edt.edt(p8, parallel=th), args.reps
        )
        res[f"edt package edt.sdf (parallel={th})"] = median_ms(
            lambda: edt.sdf(p8, parallel=th), args.reps
        )
    except ImportError:
        print("edt package not installed")
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(th)
        img = sitk.GetImageFromArray(p8)

        def maurer():
            sitk.SignedMaurerDistanceMap(
                img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
            )

        res[f"SimpleITK SignedMaurerDistanceMap ({th} threads)"] = median_ms(maurer, args.reps)
    except ImportError:
        print("SimpleITK not installed")
    batch = p8[None]
    res["reference normalised SDM (scipy+skimage), 1 patch"] = median_ms(
        lambda: reference_sdm(batch), args.reps
    )

    from medpy.metric import binary

    shape = (96, 320, 320)
    ref = blob(shape, 0.57)
    pred = blob(shape, 0.57 * 0.97, 0.04, -0.03)
    sp = (2.5, 0.625, 0.625)
    print(f"volume 320x320x96 foreground fractions {ref.mean():.3f} / {pred.mean():.3f}")

    def medpy_metrics():
        binary.hd95(pred, ref, voxelspacing=sp)
        binary.asd(pred, ref, voxelspacing=sp)

    res["medpy hd95 + asd, 320x320x96 (1 thread)"] = median_ms(medpy_metrics, max(3, args.reps // 4))
    for k, v in res.items():
        print(f"{k:62} {v:9.2f} ms")


if __name__ == "__main__":
    main()
