//! The in-memory volume: voxels, their element type and their geometry.

use crate::axes::Xyz;
use crate::error::{Result, VolumeError};
use crate::geometry::Geometry;
use std::path::Path;

/// Element types a volume file may hold (NIfTI-1 and NRRD scalars we read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl DataType {
    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::F64 => 8,
        }
    }

    /// The NIfTI-1 `datatype` code.
    pub fn nifti_code(self) -> i16 {
        match self {
            DataType::U8 => 2,
            DataType::I16 => 4,
            DataType::I32 => 8,
            DataType::F32 => 16,
            DataType::F64 => 64,
            DataType::I8 => 256,
            DataType::U16 => 512,
            DataType::U32 => 768,
        }
    }

    /// The type for a NIfTI-1 `datatype` code, if we support it.
    pub fn from_nifti_code(code: i16) -> Option<DataType> {
        Some(match code {
            2 => DataType::U8,
            4 => DataType::I16,
            8 => DataType::I32,
            16 => DataType::F32,
            64 => DataType::F64,
            256 => DataType::I8,
            512 => DataType::U16,
            768 => DataType::U32,
            _ => return None,
        })
    }

    /// Whether values of this type are integers.
    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::F32 | DataType::F64)
    }
}

/// Voxel values in file order (x fastest, then y, then z), typed as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum VoxelData {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

macro_rules! each_variant {
    ($self:expr, $v:ident => $body:expr) => {
        match $self {
            VoxelData::U8($v) => $body,
            VoxelData::I8($v) => $body,
            VoxelData::I16($v) => $body,
            VoxelData::U16($v) => $body,
            VoxelData::I32($v) => $body,
            VoxelData::U32($v) => $body,
            VoxelData::F32($v) => $body,
            VoxelData::F64($v) => $body,
        }
    };
}

// The conversions cast every variant, including the one already of the target type.
#[allow(clippy::unnecessary_cast)]
impl VoxelData {
    /// Number of voxels.
    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    /// Whether there are no voxels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        match self {
            VoxelData::U8(_) => DataType::U8,
            VoxelData::I8(_) => DataType::I8,
            VoxelData::I16(_) => DataType::I16,
            VoxelData::U16(_) => DataType::U16,
            VoxelData::I32(_) => DataType::I32,
            VoxelData::U32(_) => DataType::U32,
            VoxelData::F32(_) => DataType::F32,
            VoxelData::F64(_) => DataType::F64,
        }
    }

    /// Values as f32 (exact for all integer types up to 2^24 in magnitude).
    pub fn to_f32(&self) -> Vec<f32> {
        each_variant!(self, v => v.iter().map(|&x| x as f32).collect())
    }

    /// Values as f64 (exact for every type we hold).
    pub fn to_f64(&self) -> Vec<f64> {
        each_variant!(self, v => v.iter().map(|&x| x as f64).collect())
    }

    /// The smallest and largest value (NaN ignored; `(inf, -inf)` when
    /// there is none).
    pub fn range(&self) -> (f64, f64) {
        each_variant!(self, v => v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            let x = x as f64;
            (lo.min(x), hi.max(x))
        }))
    }

    /// Value of voxel `i` as f64.
    pub fn get_f64(&self, i: usize) -> f64 {
        each_variant!(self, v => v[i] as f64)
    }

    /// Little-endian bytes of the values, as written to files.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        each_variant!(self, v => v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    /// Index and value of the first NaN or infinite voxel, if any.
    pub fn first_non_finite(&self) -> Option<(usize, f64)> {
        match self {
            VoxelData::F32(v) => v
                .iter()
                .position(|x| !x.is_finite())
                .map(|i| (i, v[i] as f64)),
            VoxelData::F64(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
            _ => None,
        }
    }
}

/// A 3D scan or label map with its geometry.
///
/// Memory is x fastest, then y, then z, exactly as NIfTI stores it (see
/// [`crate::axes`]); spacing is in mm and the affine maps voxel indices
/// `(i, j, k, 1)` to RAS+ world millimetres.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub data: VoxelData,
    pub shape: Xyz<usize>,
    pub geometry: Geometry,
}

impl Volume {
    /// A volume from parts; fails when the data length does not match the shape.
    pub fn new(data: VoxelData, shape: Xyz<usize>, geometry: Geometry) -> Result<Volume> {
        let expected = shape.voxels();
        if data.len() != expected || expected == 0 {
            return Err(VolumeError::invalid(
                "<memory>",
                format!(
                    "data holds {} voxels but shape {:?} needs {}",
                    data.len(),
                    shape,
                    expected
                ),
            ));
        }
        Ok(Volume {
            data,
            shape,
            geometry,
        })
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the volume has no voxels (never true for a constructed volume).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Voxel spacing in mm, (sx, sy, sz).
    pub fn spacing(&self) -> Xyz<f64> {
        self.geometry.spacing
    }

    /// Voxel-to-world (RAS+, mm) affine.
    pub fn affine(&self) -> [[f64; 4]; 4] {
        self.geometry.affine
    }

    /// Fails with the file name when dtml cannot segment this image
    /// ([`unsegmentable`]).
    pub fn check_segmentable(&self, path: &Path) -> Result<()> {
        match unsegmentable(&self.data, self.shape) {
            Some(why) => Err(VolumeError::invalid(path, why)),
            None => Ok(()),
        }
    }
}

/// Why dtml cannot segment an image of `shape` with these intensities, or
/// `None` when it can: an axis of one voxel (a 2D image) or a NaN or
/// infinite intensity. The one rule of `prepare`, `predict` and the Python
/// API.
pub fn unsegmentable(data: &VoxelData, shape: Xyz<usize>) -> Option<String> {
    if let Some(a) = (0..3).find(|&a| shape[a] == 1) {
        return Some(format!(
            "shape {:?} has a single voxel along {}: a 2D image, but dtml segments 3D volumes",
            shape.xyz(),
            crate::axes::AXIS_NAMES[a]
        ));
    }
    let (i, v) = data.first_non_finite()?;
    let [x, y, z] = shape.position(i).xyz();
    Some(format!(
        "voxel ({x}, {y}, {z}) holds {v}: intensities must be finite (no NaN or infinite values)"
    ))
}
