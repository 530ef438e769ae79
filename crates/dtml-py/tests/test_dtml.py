"""The dtml wheel against the field's references, live: scipy's exact EDT,
medpy's metrics, and the DTC code's normalised SDM written with scipy and
scikit-image. Random and real-shaped masks, anisotropic spacing, every
input kind a user passes (bool, integers, floats, Fortran order, views),
empty and full masks, and the bad inputs that must raise."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from medpy.metric import binary as medpy
from skimage.segmentation import find_boundaries

import dtml

RNG = np.random.default_rng(20261203)


def blobs(shape, fill=0.3, smooth=2.0, seed=None):
    """A random mask of smooth blobs (as an organ), bool."""
    rng = RNG if seed is None else np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.standard_normal(shape), smooth)
    return noise > np.quantile(noise, 1 - fill)


SHAPES = [(40, 36, 24), (64, 48), (200,), (1, 30, 30), (96, 96, 48)]
SPACINGS = {3: (0.8, 0.7, 2.5), 2: (1.3, 0.6), 1: (0.5,)}


@pytest.mark.parametrize("shape", SHAPES)
def test_edt_and_signed_distance_equal_scipy(shape):
    mask = blobs(shape)
    spacing = SPACINGS[len(shape)]
    want = ndi.distance_transform_edt(mask, sampling=spacing)
    got = dtml.edt(mask, spacing=spacing)
    assert got.dtype == np.float32 and got.shape == mask.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    inside = ndi.distance_transform_edt(~mask, sampling=spacing)
    np.testing.assert_allclose(dtml.signed_distance(mask, spacing), inside - want, rtol=1e-6, atol=1e-5)
    # Voxel units by default.
    np.testing.assert_allclose(dtml.edt(mask), ndi.distance_transform_edt(mask), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "convert",
    [
        lambda m: m,
        lambda m: m.astype(np.uint8),
        lambda m: m.astype(np.int16) * 7,
        lambda m: m.astype(np.float64),
        lambda m: np.asfortranarray(m),
        lambda m: m.astype(np.uint8) * 255,
        lambda m: m.tolist(),
    ],
    ids=["bool", "uint8", "int16", "float64", "fortran", "uint8-255", "list"],
)
def test_every_mask_kind_gives_the_same_map(convert):
    mask = blobs((30, 28, 20))
    want = dtml.edt(mask, (1.0, 1.0, 2.0))
    np.testing.assert_array_equal(dtml.edt(convert(mask), (1.0, 1.0, 2.0)), want)


def test_views_are_read_as_the_array_they_show():
    big = blobs((60, 50, 40))
    view = big[5:45:2, ::-1, 3:33]
    np.testing.assert_array_equal(dtml.edt(view), dtml.edt(np.ascontiguousarray(view)))
    np.testing.assert_allclose(dtml.edt(view), ndi.distance_transform_edt(view), rtol=1e-6, atol=1e-5)


def dtc_compute_sdf(mask):
    """The normalised SDM of the DTC / DTML code (`compute_sdf`), one volume."""
    posmask = mask.astype(bool)
    if not posmask.any():
        return np.zeros(mask.shape)
    negmask = ~posmask
    posdis = ndi.distance_transform_edt(posmask)
    negdis = ndi.distance_transform_edt(negmask)
    boundary = find_boundaries(posmask, mode="inner").astype(np.uint8)
    sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
        posdis.max() - posdis.min()
    )
    sdf[boundary == 1] = 0
    return sdf


@pytest.mark.parametrize("shape", [(40, 36, 24), (64, 48)])
def test_normalized_sdm_equals_the_dtc_code(shape):
    mask = blobs(shape)
    np.testing.assert_allclose(dtml.normalized_sdm(mask), dtc_compute_sdf(mask), atol=1e-6)
    assert not dtml.normalized_sdm(np.zeros(shape, bool)).any()


def directed(a, b, spacing):
    """medpy's directed surface distances from a's surface to b's."""
    fp = ndi.generate_binary_structure(a.ndim, 1)
    border_a = a ^ ndi.binary_erosion(a, structure=fp, iterations=1)
    border_b = b ^ ndi.binary_erosion(b, structure=fp, iterations=1)
    return ndi.distance_transform_edt(~border_b, sampling=spacing)[border_a]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("shape", [(48, 40, 24), (64, 64)])
def test_metrics_equal_medpy(seed, shape):
    ref = blobs(shape, fill=0.25, seed=seed)
    # A prediction that misses part and adds some: surfaces of other sizes.
    pred = ndi.binary_dilation(ref, iterations=2) & blobs(shape, fill=0.8, seed=seed + 10)
    spacing = SPACINGS[len(shape)]
    m = dtml.surface_metrics(pred, ref, spacing)
    rel = dict(rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m["dice"], medpy.dc(pred, ref), **rel)
    np.testing.assert_allclose(m["jaccard"], medpy.jc(pred, ref), **rel)
    np.testing.assert_allclose(m["hd95"], medpy.hd95(pred, ref, voxelspacing=spacing), **rel)
    np.testing.assert_allclose(m["hausdorff"], medpy.hd(pred, ref, voxelspacing=spacing), **rel)
    np.testing.assert_allclose(m["asd"], medpy.asd(pred, ref, voxelspacing=spacing), **rel)
    np.testing.assert_allclose(
        m["asd_reference_to_prediction"], medpy.asd(ref, pred, voxelspacing=spacing), **rel
    )
    np.testing.assert_allclose(m["assd"], medpy.assd(pred, ref, voxelspacing=spacing), **rel)
    ab, ba = directed(pred, ref, spacing), directed(ref, pred, spacing)
    max_directed = max(np.percentile(ab, 95), np.percentile(ba, 95))
    np.testing.assert_allclose(m["hd95_max_directed"], max_directed, **rel)
    assert m["empty"] is None
    # The single-metric functions give the same numbers.
    assert dtml.hd95(pred, ref, spacing) == m["hd95"]
    assert dtml.hd95(pred, ref, spacing, definition="max_directed") == m["hd95_max_directed"]
    assert dtml.hd(pred, ref, spacing) == m["hausdorff"]
    assert dtml.asd(pred, ref, spacing) == m["asd"]
    assert dtml.assd(pred, ref, spacing) == m["assd"]
    assert dtml.dice(pred, ref) == m["dice"]
    assert dtml.jaccard(pred, ref) == m["jaccard"]


def test_pooled_and_max_directed_hd95_differ_when_surfaces_differ():
    # The prediction is the reference plus a far blob that makes 8 % of its
    # own surface but 4 % of both surfaces pooled: medpy's pooled hd95 does
    # not see it, the larger directed 95th percentile does.
    ref = np.zeros((60, 60, 60), bool)
    ref[5:35, 5:35, 5:35] = True
    pred = ref.copy()
    pred[45:55, 45:55, 45:55] = True
    assert dtml.hd95(pred, ref) == 0.0
    ab = directed(pred, ref, (1.0, 1.0, 1.0))
    assert dtml.hd95(pred, ref, definition="max_directed") == pytest.approx(np.percentile(ab, 95), rel=1e-9)
    assert dtml.hd95(pred, ref, definition="max_directed") > 20.0


def test_empty_masks_give_none_and_say_which():
    full = blobs((20, 20, 20))
    empty = np.zeros_like(full)
    m = dtml.surface_metrics(empty, full)
    assert m["empty"] == "prediction" and m["hd95"] is None and m["dice"] == 0.0
    assert dtml.surface_metrics(full, empty)["empty"] == "reference"
    both = dtml.surface_metrics(empty, empty)
    assert both["empty"] == "both" and both["dice"] is None
    assert dtml.hd95(empty, full) is None
    # A mask without background: inf on every voxel, as documented.
    assert np.isinf(dtml.edt(np.ones((4, 4, 4), bool))).all()
    # One voxel.
    one = np.zeros((9, 9, 9), bool)
    one[4, 4, 4] = True
    assert dtml.edt(one)[4, 4, 4] == 1.0
    assert dtml.surface_metrics(one, one)["hd95"] == 0.0


@pytest.mark.parametrize(
    "call, error, needle",
    [
        (lambda: dtml.edt(np.zeros((2, 2, 2, 2), bool)), ValueError, "4 axes"),
        (lambda: dtml.edt(np.array(True)), ValueError, "0 axes"),
        (lambda: dtml.edt(np.array([[np.nan, 1.0]])), ValueError, "NaN"),
        (lambda: dtml.edt(np.array(["a", "b"])), TypeError, "dtype"),
        (lambda: dtml.edt(np.ones((3, 3), bool), spacing=(1.0,)), ValueError, "spacing"),
        (lambda: dtml.edt(np.ones((3, 3), bool), spacing=(1.0, -2.0)), ValueError, "spacing"),
        (lambda: dtml.dice(np.ones((3, 3)), np.ones((3, 4))), ValueError, "shape"),
        (lambda: dtml.hd95(np.ones((3, 3)), np.ones((3, 3)), definition="mean"), ValueError, "pooled"),
    ],
)
def test_bad_inputs_raise_clear_exceptions(call, error, needle):
    with pytest.raises(error, match=needle):
        call()


def test_calls_from_threads_give_the_same_maps():
    from concurrent.futures import ThreadPoolExecutor

    masks = [blobs((80, 80, 60), seed=s) for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        maps = list(pool.map(dtml.signed_distance, masks))
    for m, d in zip(masks, maps):
        np.testing.assert_array_equal(d, dtml.signed_distance(m))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the package's scipy imports
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.7, 2.5)])
def test_surface_dice_equals_deepminds_package(seed, spacing):
    from surface_distance import compute_surface_dice_at_tolerance, compute_surface_distances

    ref = blobs((48, 40, 24), fill=0.25, seed=seed)
    pred = ndi.binary_dilation(ref, iterations=2) & blobs((48, 40, 24), fill=0.8, seed=seed + 10)
    distances = compute_surface_distances(ref, pred, spacing)
    for tolerance in [0.3, 1.1, 1.9, 3.3, 7.0]:
        want = compute_surface_dice_at_tolerance(distances, tolerance)
        got = dtml.surface_dice(pred, ref, spacing, tolerance=tolerance)
        assert got == pytest.approx(want, rel=1e-9), tolerance
    # Fortran order and uint8 masks read the same.
    assert dtml.surface_dice(np.asfortranarray(pred), ref.astype(np.uint8), spacing, tolerance=1.1) == pytest.approx(
        compute_surface_dice_at_tolerance(distances, 1.1), rel=1e-9
    )


def test_surface_dice_edge_cases():
    one = np.zeros((9, 9, 9), bool)
    one[4, 4, 4] = True
    empty = np.zeros_like(one)
    assert dtml.surface_dice(one, one, tolerance=0.0) == 1.0
    assert dtml.surface_dice(empty, empty, tolerance=1.0) is None
    assert dtml.surface_dice(one, empty, tolerance=1.0) == 0.0
    with pytest.raises(ValueError, match="3D"):
        dtml.surface_dice(np.ones((4, 4)), np.ones((4, 4)), tolerance=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        dtml.surface_dice(one, one, tolerance=-1.0)
    with pytest.raises(TypeError):
        dtml.surface_dice(one, one)


def label_maps(shape, seed):
    """Two label maps of labels 0..3 from random blobs."""
    ref = np.zeros(shape, np.int16)
    for label, fill in [(1, 0.3), (2, 0.15), (3, 0.05)]:
        ref[blobs(shape, fill=fill, seed=seed + label)] = label
    pred = ref.copy()
    pred[ndi.binary_dilation(ref == 2, iterations=2) & (ref == 0)] = 2
    pred[blobs(shape, fill=0.02, seed=seed + 9)] = 1
    return pred, ref


def test_labels_score_each_label_as_its_own_mask():
    pred, ref = label_maps((40, 36, 24), seed=5)
    spacing = (0.8, 0.7, 2.5)
    got = dtml.surface_metrics(pred, ref, spacing, labels=[1, 2, 3, 7], tolerance=1.5)
    assert sorted(got) == [1, 2, 3, 7]
    for label in [1, 2, 3]:
        want = dtml.surface_metrics(pred == label, ref == label, spacing)
        assert {k: v for k, v in got[label].items() if k != "surface_dice"} == want
        assert got[label]["surface_dice"] == dtml.surface_dice(pred == label, ref == label, spacing, tolerance=1.5)
        assert got[label]["hd95"] == pytest.approx(medpy.hd95(pred == label, ref == label, voxelspacing=spacing), rel=1e-6)
    assert got[7]["empty"] == "both" and got[7]["dice"] is None and got[7]["surface_dice"] is None
    # Label maps as float (nibabel's get_fdata) read the same; NaN is refused.
    assert dtml.surface_metrics(pred.astype(float), ref, spacing, labels=[2])[2]["dice"] == got[2]["dice"]
    bad = ref.astype(float)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dtml.surface_metrics(pred, bad, labels=[1])


def test_batches_equal_one_call_per_case():
    cases = [label_maps((32, 30, 20), seed=s) for s in (1, 2, 3)]
    preds = np.stack([p for p, _ in cases])
    refs = [r for _, r in cases]
    spacings = [(1.0, 1.0, 1.0), (0.8, 0.7, 2.5), (2.0, 0.5, 0.5)]
    got = dtml.surface_metrics_batch(preds, refs, spacings, labels=[1, 2], tolerance=2.0)
    assert len(got) == 3
    for (p, r), s, g in zip(cases, spacings, got):
        assert g == dtml.surface_metrics(p, r, s, labels=[1, 2], tolerance=2.0)
    # One spacing for every case, binary masks.
    binary = dtml.surface_metrics_batch([p > 0 for p, _ in cases], [r > 0 for _, r in cases], (0.8, 0.7, 2.5))
    assert binary[1] == dtml.surface_metrics(cases[1][0] > 0, cases[1][1] > 0, (0.8, 0.7, 2.5))
    assert "surface_dice" not in binary[0]
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        dtml.surface_metrics_batch(preds[:2], refs)
    with pytest.raises(ValueError, match="case 1: .*shape"):
        dtml.surface_metrics_batch(preds, [refs[0], refs[1][:-1], refs[2]])
    with pytest.raises(ValueError, match="2 spacings for 3 cases"):
        dtml.surface_metrics_batch(preds, refs, spacings[:2])
    with pytest.raises(ValueError, match="case 2: spacing"):
        dtml.surface_metrics_batch(preds, refs, [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, -1.0, 1.0)])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.7, 2.5)])
def test_edt_equals_the_edt_package(spacing):
    import edt

    mask = blobs((56, 48, 32), seed=4)
    np.testing.assert_allclose(dtml.edt(mask, spacing), edt.edt(mask, anisotropy=spacing), rtol=1e-6, atol=1e-5)
    inside = edt.edt(~mask, anisotropy=spacing)
    np.testing.assert_allclose(
        dtml.signed_distance(mask, spacing), inside - edt.edt(mask, anisotropy=spacing), rtol=1e-6, atol=1e-5
    )
