"""Golden values for crates/dtml-edt/tests/golden.rs, computed live.

argv[1]: a directory holding `cases.txt` (one case per line:
`name ndim d0 .. s0 ..`) and `<name>.a.u8` / `<name>.b.u8` raw masks.
Writes, per case, `<name>.edt.f64` (scipy EDT of mask a with sampling),
`<name>.sdm.f64` (the DTC/DTML compute_sdf of mask a, voxel units),
`<name>.lcc.u8` (largest component of mask a, skimage label), and
`<name>.metrics.txt` (medpy metrics of a vs b, mm and voxel units).
"""

import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt
from skimage import segmentation
from skimage.measure import label
from medpy.metric import binary


def compute_sdf(posmask):
    """The reference normalised SDM of one sample (DTC code, voxel units)."""
    negmask = ~posmask
    posdis = distance_transform_edt(posmask)
    negdis = distance_transform_edt(negmask)
    boundary = segmentation.find_boundaries(posmask, mode="inner").astype(np.uint8)
    sdf = (negdis - np.min(negdis)) / (np.max(negdis) - np.min(negdis)) - (
        posdis - np.min(posdis)
    ) / (np.max(posdis) - np.min(posdis))
    sdf[boundary == 1] = 0
    return sdf


def main():
    d = Path(sys.argv[1])
    for line in (d / "cases.txt").read_text().splitlines():
        f = line.split()
        name, ndim = f[0], int(f[1])
        shape = tuple(int(x) for x in f[2 : 2 + ndim])
        spacing = tuple(float(x) for x in f[2 + ndim : 2 + 2 * ndim])
        a = np.fromfile(d / f"{name}.a.u8", dtype=np.uint8).reshape(shape).astype(bool)
        b = np.fromfile(d / f"{name}.b.u8", dtype=np.uint8).reshape(shape).astype(bool)
        distance_transform_edt(a, sampling=spacing).astype(np.float64).tofile(d / f"{name}.edt.f64")
        compute_sdf(a).astype(np.float64).tofile(d / f"{name}.sdm.f64")
        labels = label(a)
        lcc = labels == np.argmax(np.bincount(labels.flat)[1:]) + 1
        lcc.astype(np.uint8).tofile(d / f"{name}.lcc.u8")
        out = [f"dice {float(binary.dc(a, b))!r}", f"jaccard {float(binary.jc(a, b))!r}"]
        for tag, sp in (("mm", spacing), ("vox", None)):
            out += [
                f"hd95_{tag} {float(binary.hd95(a, b, voxelspacing=sp))!r}",
                f"hd_{tag} {float(binary.hd(a, b, voxelspacing=sp))!r}",
                f"asd_{tag} {float(binary.asd(a, b, voxelspacing=sp))!r}",
                f"asd_rev_{tag} {float(binary.asd(b, a, voxelspacing=sp))!r}",
                f"assd_{tag} {float(binary.assd(a, b, voxelspacing=sp))!r}",
                # medpy <= 0.4 (and method.md): mean of the two directed means.
                f"assd_old_{tag} {float(np.mean((binary.asd(a, b, voxelspacing=sp), binary.asd(b, a, voxelspacing=sp))))!r}",
            ]
        (d / f"{name}.metrics.txt").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
