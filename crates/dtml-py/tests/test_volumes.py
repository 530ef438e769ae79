"""dtml.read_volume / dtml.write_nifti against nibabel and pynrrd, live:
arrays, affines and zooms as nibabel gives them for every way a header
states geometry, NRRD in LPS and RAS space, round trips, a real scan's
size, and the files dtml must refuse to read or to replace."""

import gzip
import os

import nibabel as nib
import nrrd
import numpy as np
import pytest

import dtml

RNG = np.random.default_rng(20261203)


def rotation(angle_deg, axis):
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def oblique_affine(spacing=(0.8, 0.7, 2.5), origin=(-100.5, 20.25, 33.0)):
    a = np.eye(4)
    a[:3, :3] = rotation(17, 2) @ rotation(-8, 0) @ np.diag(spacing) @ np.diag([-1, 1, 1])
    a[:3, 3] = origin
    return a


def assert_matches_nibabel(path):
    img = nib.load(path)
    vol = dtml.read_volume(path)
    want = np.asanyarray(img.dataobj)
    assert vol.array.shape == want.shape == vol.shape
    assert vol.array.flags.f_contiguous
    np.testing.assert_array_equal(vol.array, want)
    np.testing.assert_allclose(vol.affine, img.affine, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vol.spacing, img.header.get_zooms()[:3], rtol=1e-7)
    np.testing.assert_allclose(vol.origin, img.affine[:3, 3], rtol=1e-6, atol=1e-6)
    dirs = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    np.testing.assert_allclose(vol.directions, dirs, atol=1e-6)
    return vol


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_reads_as_nibabel(tmp_path, dtype, suffix):
    data = (RNG.standard_normal((23, 17, 9)) * 40).astype(dtype)
    path = tmp_path / f"scan{suffix}"
    nib.save(nib.Nifti1Image(data, oblique_affine()), path)
    vol = assert_matches_nibabel(path)
    assert vol.array.dtype == dtype


@pytest.mark.parametrize("forms", ["sform", "qform", "neither", "sform-over-qform"])
def test_every_way_a_header_states_geometry(tmp_path, forms):
    img = nib.Nifti1Image(RNG.integers(0, 500, (12, 10, 7), dtype=np.int16), None)
    sform = oblique_affine()
    qform = oblique_affine(spacing=(1.0, 1.1, 3.0), origin=(5.0, -6.0, 7.0))
    if forms == "sform":
        img.set_sform(sform, code=2)
        img.set_qform(None, code=0)
    elif forms == "qform":
        img.set_qform(qform, code=1)
        img.set_sform(None, code=0)
    elif forms == "neither":
        img.header.set_zooms((0.9, 0.8, 2.0))
        img.set_qform(None, code=0)
        img.set_sform(None, code=0)
    else:
        img.set_qform(qform, code=1)
        img.set_sform(sform, code=4)
    path = tmp_path / f"{forms}.nii.gz"
    nib.save(img, path)
    assert_matches_nibabel(path)


def test_scaled_values_are_read_as_nibabel_scales_them(tmp_path):
    img = nib.Nifti1Image(RNG.integers(-300, 300, (8, 9, 10), dtype=np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, -1024.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, path)
    vol = dtml.read_volume(path)
    assert vol.array.dtype == np.float64
    np.testing.assert_allclose(vol.array, nib.load(path).get_fdata(), rtol=0, atol=1e-9)


def test_4d_file_needs_a_channel(tmp_path):
    data = RNG.standard_normal((6, 5, 4, 3)).astype(np.float32)
    path = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_affine()), path)
    with pytest.raises(ValueError, match="channel"):
        dtml.read_volume(path)
    for c in range(3):
        np.testing.assert_array_equal(dtml.read_volume(path, channel=c).array, data[..., c])
    with pytest.raises(ValueError, match="channel 3"):
        dtml.read_volume(path, channel=3)


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior"])
def test_nrrd_gets_the_ras_affine(tmp_path, space):
    data = RNG.integers(0, 1000, (11, 13, 7)).astype(np.int16)
    dirs = (rotation(25, 2) @ np.diag([0.6, 0.75, 2.0])).T  # rows: one per axis
    origin = np.array([12.5, -30.0, 44.0])
    path = tmp_path / "scan.nrrd"
    header = {"space": space, "space directions": dirs, "space origin": origin, "encoding": "gzip"}
    nrrd.write(str(path), data, header)
    vol = dtml.read_volume(path)
    np.testing.assert_array_equal(vol.array, nrrd.read(str(path))[0])
    flip = np.diag([-1.0, -1.0, 1.0]) if space.startswith("left") else np.eye(3)
    want = np.eye(4)
    want[:3, :3] = flip @ dirs.T
    want[:3, 3] = flip @ origin
    np.testing.assert_allclose(vol.affine, want, atol=1e-9)
    np.testing.assert_allclose(vol.spacing, [0.6, 0.75, 2.0], rtol=1e-12)


@pytest.mark.parametrize(
    "array",
    [
        RNG.standard_normal((14, 12, 6)).astype(np.float32),
        RNG.standard_normal((14, 12, 6)),
        RNG.integers(-2000, 2000, (14, 12, 6)).astype(np.int16),
        RNG.integers(0, 60000, (14, 12, 6)).astype(np.uint16),
        RNG.integers(-5, 5, (14, 12, 6)).astype(np.int8),
        RNG.integers(0, 4, (14, 12, 6)).astype(np.uint32),
    ],
    ids=["float32", "float64", "int16", "uint16", "int8", "uint32"],
)
def test_written_files_read_back_in_nibabel(tmp_path, array):
    path = tmp_path / "out.nii.gz"
    affine = oblique_affine()
    dtml.write_nifti(path, array, affine=affine)
    img = nib.load(path)
    assert img.get_data_dtype() == array.dtype
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), array)
    np.testing.assert_allclose(img.affine, affine, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), [0.8, 0.7, 2.5], rtol=1e-6)
    np.testing.assert_allclose(nib.Nifti1Image(array, None, img.header).get_qform(), affine, atol=1e-5)


def test_every_array_layout_writes_the_same_file(tmp_path):
    base = RNG.integers(0, 3, (30, 26, 12)).astype(np.uint8)
    layouts = {
        "c": np.ascontiguousarray(base),
        "f": np.asfortranarray(base),
        "view": np.ascontiguousarray(np.pad(base, 2)[::-1, :, :])[::-1][2:-2, 2:-2, 2:-2],
        "bool": base.astype(bool),
        "int64": base.astype(np.int64),
    }
    written = {}
    for name, array in layouts.items():
        path = tmp_path / f"{name}.nii"
        dtml.write_nifti(path, array)
        written[name] = dtml.read_volume(path).array
    for name, got in written.items():
        want = (base != 0).astype(np.uint8) if name == "bool" else base
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert written["int64"].dtype == np.int32


def test_a_mask_written_like_its_scan_keeps_the_scan_header(tmp_path):
    img = nib.Nifti1Image(RNG.integers(0, 900, (20, 18, 8), dtype=np.int16), None)
    img.set_qform(oblique_affine(spacing=(1.0, 1.1, 3.0)), code=1)
    img.set_sform(oblique_affine(), code=2)
    scan_path = tmp_path / "scan.nii.gz"
    nib.save(img, scan_path)
    scan = dtml.read_volume(scan_path)
    mask = scan.array > 450
    dtml.write_nifti(tmp_path / "mask.nii.gz", mask, like=scan)
    out = nib.load(tmp_path / "mask.nii.gz")
    assert out.header["sform_code"] == 2 and out.header["qform_code"] == 1
    np.testing.assert_array_equal(out.get_sform(), img.get_sform())
    np.testing.assert_allclose(out.get_qform(), img.get_qform(), atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), mask.astype(np.uint8))
    with pytest.raises(ValueError, match="grid"):
        dtml.write_nifti(tmp_path / "bad.nii.gz", mask[:-1], like=scan)
    with pytest.raises(ValueError, match="not both"):
        dtml.write_nifti(tmp_path / "bad.nii.gz", mask, affine=np.eye(4), like=scan)


def test_a_real_scan_size_round_trips(tmp_path):
    # 320x320x96 int16 (19.7 MB raw, several MiB gzipped), as an LA scan.
    z = np.linspace(0, 6, 96)[None, None, :]
    smooth = 800 * np.sin(np.linspace(0, 9, 320))[:, None, None] * np.cos(np.linspace(0, 7, 320))[None, :, None]
    data = (smooth + 300 * np.sin(z) + RNG.normal(0, 60, (320, 320, 96))).astype(np.int16)
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_affine(spacing=(0.625, 0.625, 0.625))), path)
    assert os.path.getsize(path) > 4 << 20
    vol = assert_matches_nibabel(path)
    out = tmp_path / "copy.nii.gz"
    dtml.write_nifti(out, vol.array, like=vol)
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), data)


def test_dtml_replaces_only_its_own_files(tmp_path):
    theirs = tmp_path / "theirs.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), theirs)
    before = theirs.read_bytes()
    with pytest.raises(FileExistsError, match="dtml did not write it"):
        dtml.write_nifti(theirs, np.zeros((4, 4, 4), np.uint8))
    assert theirs.read_bytes() == before
    notes = tmp_path / "notes.nii"
    notes.write_text("my notes")
    with pytest.raises(FileExistsError):
        dtml.write_nifti(notes, np.zeros((4, 4, 4), np.uint8))
    assert notes.read_text() == "my notes"
    with pytest.raises(FileExistsError):
        dtml.write_nifti(tmp_path, np.zeros((4, 4, 4), np.uint8))
    ours = tmp_path / "ours.nii.gz"
    dtml.write_nifti(ours, np.zeros((4, 4, 4), np.uint8))
    dtml.write_nifti(ours, np.ones((4, 4, 4), np.uint8))
    assert dtml.read_volume(ours).array.all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.nii", "ours.nii.gz", "theirs.nii.gz"]


def truncated(tmp_path):
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), path)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return path


@pytest.mark.parametrize(
    "call, error, needle",
    [
        (lambda p: dtml.read_volume(p / "missing.nii.gz"), FileNotFoundError, "missing.nii.gz"),
        (lambda p: dtml.read_volume(truncated(p)), ValueError, "cut.nii.gz"),
        (lambda p: dtml.read_volume(p / "scan.mha"), ValueError, "extension"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.zeros((3, 3)), None), ValueError, "3"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.zeros((3, 0, 3))), ValueError, "at least one voxel"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.zeros((3, 3, 3), complex)), TypeError, "dtype"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.full((3, 3, 3), 2**40)), ValueError, "int32"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.zeros((3, 3, 3)), affine=np.eye(3)), ValueError, "4x4"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.zeros((3, 3, 3)), affine=np.diag([1, 0, 1, 1])), ValueError, "singular"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.zeros((3, 3, 3)), affine=np.full((4, 4), np.nan)), ValueError, "NaN"),
        (lambda p: dtml.write_nifti(p / "a.mha", np.zeros((3, 3, 3))), ValueError, ".nii"),
        (lambda p: dtml.write_nifti(p / "a.nii", np.zeros((40000, 1, 1), np.uint8)), ValueError, "32767"),
    ],
)
def test_bad_files_and_arrays_raise_clear_exceptions(tmp_path, call, error, needle):
    with pytest.raises(error, match=needle):
        call(tmp_path)
    assert not (tmp_path / "a.nii").exists()
