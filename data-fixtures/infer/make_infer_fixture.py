"""Golden masks for dtml's sliding-window inference, made with PyTorch.

Run from the repository root with a Python that has torch, numpy, nibabel
and scikit-image:
    python data-fixtures/infer/make_infer_fixture.py
It reuses the width-4 V-Net of `data-fixtures/vnet` (module tree and
weights `vnet_w4.pth`), writes a small scan `scan.nii.gz` (int16, shape
(x, y, z) = (40, 28, 20): y is smaller than the patch, so it is padded;
sform with a shear and a different qform, so header geometry that is not
copied verbatim shows) and the reference pipeline's predictions:

- `expected_region.nii.gz`: `test_single_case` as in the UA-MT / DTC /
  DTML code (z-score, zero-pad to the patch, windows of (32, 32, 16) with
  strides (8, 8, 4), sigmoid of the segmentation head, overlap average,
  threshold 0.5), region student only, no post-processing;
- `expected_region_probability.nii.gz`: the averaged probability (f32);
- `expected_region_t040_lcc.nii.gz`: that probability thresholded at 0.4
  (the random fixture network is unsure everywhere: at 0.5 only a few
  percent of voxels are foreground, at 0.4 about a tenth, in several
  blobs) and reduced by the reference's `getLargestCC` (scikit-image
  `label`, full connectivity);
- `expected_boundary.nii.gz`: `sigmoid(-1500 * tanh(sdm))` of the same
  network's SDM head alone, no post-processing;
- `expected_ensemble.nii.gz`: the mean of both (the same network serving
  as both students), no post-processing.

Arrays are in nibabel's (x, y, z) order and go into PyTorch as
(N, C, x, y, z), as the reference pipeline feeds them; dtml's tensors are
(N, C, z, y, x), which is what the comparison proves.
"""
import math
import os
import sys

import nibabel as nib
import numpy as np
import torch
from skimage.measure import label

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "vnet"))
from make_vnet_fixture import VNet  # noqa: E402

SHAPE = (40, 28, 20)
PATCH = (32, 32, 16)
STRIDE_XY, STRIDE_Z = 8, 4


def test_single_case(net, image, stride_xy, stride_z, patch_size, num_classes=1, mode="region"):
    """The reference sliding window (UA-MT / DTC `test_util.py`), with the
    DTML ensemble of the two heads selectable by `mode`."""
    w, h, d = image.shape

    # if the size of image is less than patch_size, then padding it
    add_pad = False
    if w < patch_size[0]:
        w_pad = patch_size[0] - w
        add_pad = True
    else:
        w_pad = 0
    if h < patch_size[1]:
        h_pad = patch_size[1] - h
        add_pad = True
    else:
        h_pad = 0
    if d < patch_size[2]:
        d_pad = patch_size[2] - d
        add_pad = True
    else:
        d_pad = 0
    wl_pad, wr_pad = w_pad // 2, w_pad - w_pad // 2
    hl_pad, hr_pad = h_pad // 2, h_pad - h_pad // 2
    dl_pad, dr_pad = d_pad // 2, d_pad - d_pad // 2
    if add_pad:
        image = np.pad(image, [(wl_pad, wr_pad), (hl_pad, hr_pad), (dl_pad, dr_pad)], mode="constant", constant_values=0)
    ww, hh, dd = image.shape

    sx = math.ceil((ww - patch_size[0]) / stride_xy) + 1
    sy = math.ceil((hh - patch_size[1]) / stride_xy) + 1
    sz = math.ceil((dd - patch_size[2]) / stride_z) + 1
    score_map = np.zeros((num_classes,) + image.shape).astype(np.float32)
    cnt = np.zeros(image.shape).astype(np.float32)

    for x in range(0, sx):
        xs = min(stride_xy * x, ww - patch_size[0])
        for y in range(0, sy):
            ys = min(stride_xy * y, hh - patch_size[1])
            for z in range(0, sz):
                zs = min(stride_z * z, dd - patch_size[2])
                test_patch = image[xs:xs + patch_size[0], ys:ys + patch_size[1], zs:zs + patch_size[2]]
                test_patch = np.expand_dims(np.expand_dims(test_patch, axis=0), axis=0).astype(np.float32)
                test_patch = torch.from_numpy(test_patch)
                with torch.no_grad():
                    y1_tanh, y1 = net(test_patch)
                    y_region = torch.sigmoid(y1)
                    dis_to_mask = torch.sigmoid(-1500 * y1_tanh)
                if mode == "region":
                    y = y_region
                elif mode == "boundary":
                    y = dis_to_mask
                else:
                    y = (y_region + dis_to_mask) / 2
                y = y.cpu().data.numpy()
                y = y[0, :, :, :, :]
                score_map[:, xs:xs + patch_size[0], ys:ys + patch_size[1], zs:zs + patch_size[2]] = (
                    score_map[:, xs:xs + patch_size[0], ys:ys + patch_size[1], zs:zs + patch_size[2]] + y
                )
                cnt[xs:xs + patch_size[0], ys:ys + patch_size[1], zs:zs + patch_size[2]] = (
                    cnt[xs:xs + patch_size[0], ys:ys + patch_size[1], zs:zs + patch_size[2]] + 1
                )
    score_map = score_map / np.expand_dims(cnt, axis=0)
    label_map = (score_map[0] > 0.5).astype(np.int64)
    if add_pad:
        label_map = label_map[wl_pad:wl_pad + w, hl_pad:hl_pad + h, dl_pad:dl_pad + d]
        score_map = score_map[:, wl_pad:wl_pad + w, hl_pad:hl_pad + h, dl_pad:dl_pad + d]
    return label_map, score_map


def getLargestCC(segmentation):
    labels = label(segmentation)
    assert labels.max() != 0  # assume at least 1 CC
    largestCC = labels == np.argmax(np.bincount(labels.flat)[1:]) + 1
    return largestCC


def make_scan(rng):
    """An MR-like int16 scan: a few dark ellipsoids of different sizes on
    a smooth bright background, with noise (the fixture network's region
    head responds to dark blobs, so its masks follow them)."""
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    img = 200.0 + 3.0 * x - 2.0 * y + 4.0 * z
    for (cx, cy, cz, rx, ry, rz, v) in [
        (14, 12, 9, 9, 7, 6, 600),
        (31, 19, 12, 5, 4, 4, 450),
        (30, 6, 4, 3, 3, 3, 500),
        (6, 23, 16, 3, 2, 3, 350),
    ]:
        inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0
        img[inside] += v
    img += rng.normal(0.0, 25.0, SHAPE)
    return np.round(1500.0 - img).astype(np.int16)


def geometry():
    """A rotated, sheared sform and a plain rotation qform (codes 2 and 1)."""
    a, b = math.radians(20.0), math.radians(-10.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rot = rz @ rx
    zooms = np.diag([0.8, 0.9, 1.5])
    q = np.eye(4)
    q[:3, :3] = rot @ zooms
    q[:3, 3] = [-17.5, 32.25, -8.0]
    s = q.copy()
    s[0, 1] += 0.05  # a shear the qform cannot express
    s[:3, 3] += [0.5, -0.25, 1.0]
    return s, q


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else HERE
    rng = np.random.default_rng(11)
    scan = make_scan(rng)
    sform, qform = geometry()
    img = nib.Nifti1Image(scan, sform)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, os.path.join(out, "scan.nii.gz"))

    # Read back as a user's file would be, z-score over the volume.
    back = nib.load(os.path.join(out, "scan.nii.gz"))
    image = np.asanyarray(back.dataobj).astype(np.float64)
    image = ((image - image.mean()) / image.std()).astype(np.float32)

    net = VNet(1, 4, 1)
    state = torch.load(os.path.join(HERE, "..", "vnet", "vnet_w4.pth"))
    net.load_state_dict(state)
    net.eval()

    def save_mask(name, m):
        m = nib.Nifti1Image(m.astype(np.uint8), sform, header=back.header)
        m.set_data_dtype(np.uint8)
        nib.save(m, os.path.join(out, name))

    region, score = test_single_case(net, image, STRIDE_XY, STRIDE_Z, PATCH, mode="region")
    at040 = (score[0] > 0.4).astype(np.int64)
    lcc = getLargestCC(at040)
    boundary, _ = test_single_case(net, image, STRIDE_XY, STRIDE_Z, PATCH, mode="boundary")
    both, _ = test_single_case(net, image, STRIDE_XY, STRIDE_Z, PATCH, mode="ensemble")
    save_mask("expected_region.nii.gz", region)
    save_mask("expected_region_t040_lcc.nii.gz", lcc)
    save_mask("expected_boundary.nii.gz", boundary)
    save_mask("expected_ensemble.nii.gz", both)
    p = nib.Nifti1Image(score[0].astype(np.float32), sform, header=back.header)
    p.set_data_dtype(np.float32)
    nib.save(p, os.path.join(out, "expected_region_probability.nii.gz"))

    n = region.size
    for t, m in [(0.5, region), (0.4, at040)]:
        near = np.abs(score[0] - t) < 1e-5
        print(f"region at {t}: {m.sum() / n:.1%} foreground in {label(m).max()} components; "
              f"{near.sum()} voxels within 1e-5 of the threshold")
    print(f"largest component at 0.4: {lcc.sum() / n:.1%}")
    print(f"boundary: {boundary.sum() / n:.1%}; ensemble: {both.sum() / n:.1%}")


if __name__ == "__main__":
    main()
