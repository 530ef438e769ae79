"""dtml.Model against PyTorch and against the CLI, live: the authors'
V-Net `.pth` slides over a scan as the UA-MT / DTC / DTML test script does
(golden masks and probabilities made with PyTorch, data-fixtures/infer),
and a run trained by `dtml train` predicts from Python exactly what
`dtml predict` writes, byte for byte."""

import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import dtml

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "data-fixtures"
PTH = FIXTURES / "vnet" / "vnet_w4.pth"
SCAN = FIXTURES / "infer" / "scan.nii.gz"
GOLDEN = dict(patch=(32, 32, 16), stride=(8, 8, 4), largest_component=False)


def expected(name):
    return np.asanyarray(nib.load(FIXTURES / "infer" / name).dataobj)


def differing(a, b):
    assert a.shape == b.shape
    return int((a != b).sum())


def test_pth_region_student_equals_pytorch():
    model = dtml.Model(PTH)
    assert model.width == 4 and model.student == "region"
    p = model.predict(dtml.read_volume(SCAN), **GOLDEN)
    assert p["mask"].dtype == np.uint8 and p["mask"].shape == (40, 28, 20)
    assert p["probability"].dtype == np.float32
    np.testing.assert_allclose(p["probability"], expected("expected_region_probability.nii.gz"), atol=1e-5, rtol=0)
    assert differing(p["mask"], expected("expected_region.nii.gz")) <= 1
    assert p["disagreement"] is None
    # Threshold 0.4 and the largest 26-connected component, as getLargestCC.
    p = model.predict(SCAN_ARRAY(), patch=(32, 32, 16), stride=(8, 8, 4), threshold=0.4, batch=3)
    assert differing(p["mask"], expected("expected_region_t040_lcc.nii.gz")) <= 2


def SCAN_ARRAY():
    """The scan as nibabel gives it: a plain array works like a Volume."""
    return np.asanyarray(nib.load(SCAN).dataobj)


def test_pth_boundary_student_and_ensemble_equal_pytorch():
    boundary = dtml.Model(PTH, student="boundary")
    p = boundary.predict(SCAN_ARRAY(), **GOLDEN)
    assert differing(p["mask"], expected("expected_boundary.nii.gz")) <= 3
    # The same file twice: one network's two heads as the two students.
    both = dtml.Model([PTH, str(PTH)])
    assert both.student == "ensemble"
    p = both.predict(SCAN_ARRAY(), disagreement=True, **GOLDEN)
    assert differing(p["mask"], expected("expected_ensemble.nii.gz")) <= 3
    d = p["disagreement"]
    assert d.dtype == np.float32 and ((d >= 0) & (d <= 1)).all() and d.any()


def dtml_bin():
    path = os.environ.get("DTML_BIN") or shutil.which("dtml")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("DTML_BIN is not set: CI must compare Python with the CLI")
        pytest.skip("no dtml binary (set DTML_BIN)")
    return path


def cli(*args):
    subprocess.run([dtml_bin(), "--log", "warn", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-student run trained by the CLI, and its predictions."""
    work = tmp_path_factory.mktemp("cli")
    cli("generate", "--out", work / "data", "--shape", "40,36,24", "--train-cases", "4", "--test-cases", "2")
    cli("prepare", "--data", work / "data", "--out", work / "prepared", "--labelled", "2")
    cli(
        "train", "--data", work / "prepared", "--out", work / "run", "--iterations", "3",
        "--patch", "32,32,16", "--width", "2", "--checkpoint-every", "0",
    )
    scans = sorted((work / "data" / "imagesTs").iterdir())
    cli(
        "predict", "--model", work / "run", "--input", work / "data" / "imagesTs", "--out", work / "masks",
        "--disagreement", "--probability",
    )
    return work, scans


def test_predictions_equal_the_cli_byte_for_byte(trained, tmp_path):
    work, scans = trained
    model = dtml.Model(work / "run")
    assert model.student == "ensemble" and model.patch == (32, 32, 16)
    for scan in scans:
        case = scan.name.removesuffix(".nii.gz").removesuffix("_0000")
        vol = dtml.read_volume(scan)
        p = model.predict(vol, disagreement=True)
        cli_mask = nib.load(work / "masks" / f"{case}.nii.gz")
        np.testing.assert_array_equal(p["mask"], np.asanyarray(cli_mask.dataobj))
        np.testing.assert_array_equal(
            p["probability"], np.asanyarray(nib.load(work / "masks" / f"{case}_probability.nii.gz").dataobj)
        )
        np.testing.assert_array_equal(
            p["disagreement"], np.asanyarray(nib.load(work / "masks" / f"{case}_disagreement.nii.gz").dataobj)
        )
        # Written like its scan, the mask file is the CLI's file.
        dtml.write_nifti(tmp_path / f"{case}.nii.gz", p["mask"], like=vol)
        assert (tmp_path / f"{case}.nii.gz").read_bytes() == (work / "masks" / f"{case}.nii.gz").read_bytes()


def test_the_run_keeps_its_settings_unless_told(trained):
    work, scans = trained
    vol = dtml.read_volume(scans[0])
    region = dtml.Model(work / "run", student="region")
    p = region.predict(vol, threshold=0.3, largest_component=False)
    cli(
        "predict", "--model", work / "run", "--input", scans[0], "--out", work / "region-masks",
        "--student", "region", "--threshold", "0.3", "--no-largest-component",
    )
    case = scans[0].name.removesuffix(".nii.gz").removesuffix("_0000")
    got = np.asanyarray(nib.load(work / "region-masks" / f"{case}.nii.gz").dataobj)
    np.testing.assert_array_equal(p["mask"], got)


@pytest.mark.parametrize(
    "call, error, needle",
    [
        (lambda: dtml.Model(FIXTURES / "missing-run"), FileNotFoundError, "missing-run"),
        (lambda: dtml.Model(SCAN), ValueError, "scan.nii.gz"),
        (lambda: dtml.Model(PTH, student="both-ish"), ValueError, "region"),
        (lambda: dtml.Model(PTH, student="ensemble"), ValueError, "two students"),
        (lambda: dtml.Model(PTH).predict(np.zeros((40, 40))), ValueError, "axes"),
        (lambda: dtml.Model(PTH).predict(np.zeros((40, 1, 40))), ValueError, "2D"),
        (lambda: dtml.Model(PTH).predict(np.full((20, 20, 20), np.nan)), ValueError, "finite"),
        (lambda: dtml.Model(PTH).predict(SCAN_ARRAY(), patch=(30, 32, 16)), ValueError, "patch"),
        (lambda: dtml.Model(PTH).predict(SCAN_ARRAY(), stride=(0, 8, 4)), ValueError, "stride"),
        (lambda: dtml.Model(PTH).predict(SCAN_ARRAY(), disagreement=True), ValueError, "two students"),
        (lambda: dtml.Model(PTH).predict(SCAN_ARRAY(), connectivity=8), ValueError, "26"),
        (lambda: dtml.Model(PTH).predict(SCAN_ARRAY(), threshold=1.5), ValueError, "threshold"),
    ],
)
def test_bad_models_and_images_raise_clear_exceptions(call, error, needle):
    with pytest.raises(error, match=needle):
        call()


def test_ctrl_c_stops_a_long_prediction():
    import signal
    import sys
    import time

    # Windows of 32x32x16 every voxel along z over 160x160x96: minutes of work.
    script = (
        "import sys, numpy as np, dtml; m = dtml.Model(sys.argv[1]); print('ready', flush=True); "
        "m.predict(np.random.default_rng(0).normal(size=(160, 160, 96)).astype(np.float32), "
        "patch=(32, 32, 16), stride=(4, 4, 1))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(PTH)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    assert child.poll() is None, "the prediction must still be running"
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr, stderr
    assert waited < 20, f"Ctrl-C took {waited:.1f} s"
