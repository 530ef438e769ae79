"""Exact Euclidean distance maps, segmentation metrics and NIfTI / NRRD
volumes from dtml.

Masks are numpy arrays (or array-likes) of 1 to 3 axes; non-zero is
foreground. Axes and `spacing` are in numpy's order (for a nibabel array,
(x, y, z) and its zooms). Distances are float32 arrays of the mask's shape.
Volumes follow nibabel: arrays indexed [i, j, k], RAS+ affines in mm.
"""

import os
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str

def edt(mask: npt.ArrayLike, spacing: Optional[Sequence[float]] = None) -> npt.NDArray[np.float32]:
    """scipy.ndimage.distance_transform_edt(mask, sampling=spacing); inf without background."""

def signed_distance(
    mask: npt.ArrayLike, spacing: Optional[Sequence[float]] = None
) -> npt.NDArray[np.float32]:
    """edt(~mask) - edt(mask): negative inside, positive outside."""

def normalized_sdm(mask: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """The DTC / DTML code's normalised SDM target (voxel units)."""

class SurfaceMetrics(TypedDict):
    dice: Optional[float]
    jaccard: Optional[float]
    prediction_voxels: int
    reference_voxels: int
    empty: Optional[Literal["prediction", "reference", "both"]]
    hd95: Optional[float]
    hd95_max_directed: Optional[float]
    hausdorff: Optional[float]
    asd: Optional[float]
    asd_reference_to_prediction: Optional[float]
    assd: Optional[float]
    assd_mean_of_means: Optional[float]
    surface_dice: Optional[float]  # only with tolerance=

def surface_metrics(
    prediction: npt.ArrayLike,
    reference: npt.ArrayLike,
    spacing: Optional[Sequence[float]] = None,
    *,
    labels: Optional[Sequence[int]] = None,
    tolerance: Optional[float] = None,
) -> Union[SurfaceMetrics, Dict[int, SurfaceMetrics]]:
    """Every metric of one pair; distances None when a mask is empty. With
    `tolerance` also `surface_dice`; with `labels`, a dict per label."""

def surface_metrics_batch(
    predictions: Sequence[npt.ArrayLike],
    references: Sequence[npt.ArrayLike],
    spacing: Optional[Union[Sequence[float], Sequence[Sequence[float]]]] = None,
    *,
    labels: Optional[Sequence[int]] = None,
    tolerance: Optional[float] = None,
) -> List[Union[SurfaceMetrics, Dict[int, SurfaceMetrics]]]:
    """`surface_metrics` of many cases in parallel; one spacing or one per case."""

def dice(prediction: npt.ArrayLike, reference: npt.ArrayLike) -> Optional[float]: ...
def jaccard(prediction: npt.ArrayLike, reference: npt.ArrayLike) -> Optional[float]: ...
def hd95(
    prediction: npt.ArrayLike,
    reference: npt.ArrayLike,
    spacing: Optional[Sequence[float]] = None,
    definition: Literal["pooled", "max_directed"] = "pooled",
) -> Optional[float]:
    """pooled: medpy's hd95 (default); max_directed: MONAI's."""

def hd(
    prediction: npt.ArrayLike, reference: npt.ArrayLike, spacing: Optional[Sequence[float]] = None
) -> Optional[float]: ...
def asd(
    prediction: npt.ArrayLike, reference: npt.ArrayLike, spacing: Optional[Sequence[float]] = None
) -> Optional[float]: ...
def assd(
    prediction: npt.ArrayLike, reference: npt.ArrayLike, spacing: Optional[Sequence[float]] = None
) -> Optional[float]: ...
def surface_dice(
    prediction: npt.ArrayLike,
    reference: npt.ArrayLike,
    spacing: Optional[Sequence[float]] = None,
    *,
    tolerance: float,
) -> Optional[float]:
    """Surface Dice at `tolerance` (DeepMind's surface-distance); 3D masks."""

PathLike = Union[str, "os.PathLike[str]"]

class Volume:
    """A scan or label map read by `read_volume`."""

    @property
    def array(self) -> np.ndarray:
        """Voxels (X, Y, Z) as nibabel's dataobj: Fortran order, the file's type
        (float64 when the header scales values)."""
    @property
    def shape(self) -> Tuple[int, int, int]: ...
    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """4x4 voxel-to-world matrix, RAS+ mm (nibabel's img.affine)."""
    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Voxel size in mm along i, j, k (header.get_zooms()[:3])."""
    @property
    def origin(self) -> Tuple[float, float, float]:
        """affine[:3, 3]."""
    @property
    def directions(self) -> npt.NDArray[np.float64]:
        """affine[:3, :3] with unit columns."""

def read_volume(path: PathLike, channel: Optional[int] = None) -> Volume:
    """Reads NIfTI-1 (.nii, .nii.gz, .hdr/.img) or NRRD (.nrrd, .nhdr); a 4D
    file needs `channel`."""

def write_nifti(
    path: PathLike,
    array: npt.ArrayLike,
    affine: Optional[npt.ArrayLike] = None,
    like: Optional[Volume] = None,
) -> None:
    """Writes a 3D array as .nii / .nii.gz atomically, with `like`'s header
    geometry or `affine`; raises FileExistsError rather than replace a file
    dtml did not write."""

class Prediction(TypedDict):
    mask: npt.NDArray[np.uint8]
    probability: npt.NDArray[np.float32]
    disagreement: Optional[npt.NDArray[np.float32]]

class Model:
    """Trained students: a run directory, or one or two weight files
    (.safetensors, or the authors' V-Net .pth; two are region then boundary)."""

    def __init__(
        self,
        model: Union[PathLike, Sequence[PathLike]],
        student: Optional[Literal["ensemble", "region", "boundary"]] = None,
    ) -> None: ...
    def predict(
        self,
        image: Union[Volume, npt.ArrayLike],
        *,
        patch: Optional[Tuple[int, int, int]] = None,
        stride: Optional[Tuple[int, int, int]] = None,
        batch: Optional[int] = None,
        threshold: Optional[float] = None,
        largest_component: bool = True,
        connectivity: Literal[6, 26] = 26,
        disagreement: bool = False,
    ) -> Prediction:
        """Segments a scan (raw intensities, [i, j, k]) as `dtml predict` does."""
    @property
    def width(self) -> Optional[int]: ...
    @property
    def patch(self) -> Tuple[int, int, int]: ...
    @property
    def student(self) -> str: ...

class TrainResult(TypedDict):
    run: "os.PathLike[str]"
    iterations: Optional[int]
    loss: Optional[float]
    best_iteration: Optional[int]
    best_dice: Optional[float]
    students: List["os.PathLike[str]"]

def train(
    data: PathLike,
    out: PathLike,
    *,
    resume: bool = False,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    **settings: Any,
) -> TrainResult:
    """`dtml train --data DATA --out OUT`; settings are the run's TOML keys
    (method, iterations, patch, width, seed, threads, ...). Ctrl-C or an
    exception in the callback stops after the iteration in progress with a
    checkpoint there; resume=True goes on exactly."""
