//! One cached case read in windows, so training can sample more cases than
//! fit in memory: the safetensors header is read and checked once, then a
//! patch reads only the box it covers, one positioned read per plane (the
//! rows of the box, whole), checked as [`PreparedDataset::load`] checks a
//! whole case (finite image, 0/1 label). The file is opened per read: a
//! cohort of thousands of cases must not hold thousands of descriptors.

use super::*;
use std::fs::File;
use std::io::Read;

/// The largest safetensors header of a cache file (`prepare` writes about
/// 200 bytes).
const HEADER_MAX_BYTES: u64 = 1 << 16;

/// A box of a case's grid: its first voxel and its size, (x, y, z).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridBox {
    pub start: Xyz<usize>,
    pub size: Xyz<usize>,
}

impl GridBox {
    /// The whole grid of `shape`.
    pub fn whole(shape: Xyz<usize>) -> GridBox {
        GridBox {
            start: Xyz::splat(0),
            size: shape,
        }
    }

    /// Whether the box lies inside a grid of `shape`.
    pub fn fits(&self, shape: Xyz<usize>) -> bool {
        (0..3).all(|a| {
            self.start[a]
                .checked_add(self.size[a])
                .is_some_and(|end| end <= shape[a])
        })
    }
}

/// Where one case's arrays lie in its cache file, checked against the
/// manifest when opened.
#[derive(Debug, Clone)]
pub struct CaseFile {
    path: PathBuf,
    /// The prepared grid.
    pub shape: Xyz<usize>,
    image_at: u64,
    label_at: Option<u64>,
}

impl PreparedDataset {
    /// Opens one case for windowed reads: its file confined to the cache,
    /// its header read and checked against the record (dtype, shape, the
    /// file's length), none of its voxels read.
    pub fn open_case(&self, record: &CaseRecord) -> Result<CaseFile> {
        let path = crate::confine::inside(
            &self.dir,
            &self.dir.join(&record.file),
            &format!("file of case {}", record.id),
            &self.dir.join(MANIFEST),
        )?;
        CaseFile::open(&path, record)
    }
}

impl CaseFile {
    /// Opens the case file at `path` (already confined) for `record`.
    pub(super) fn open(path: &Path, record: &CaseRecord) -> Result<CaseFile> {
        let path = path.to_path_buf();
        let mut file = File::open(&path).map_err(|e| VolumeError::io(&path, e))?;
        let length = file
            .metadata()
            .map_err(|e| VolumeError::io(&path, e))?
            .len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n)
            .map_err(|_| VolumeError::dataset(&path, "corrupt safetensors: no header"))?;
        let n = u64::from_le_bytes(n);
        if n > HEADER_MAX_BYTES || n + 8 > length {
            return Err(VolumeError::dataset(
                &path,
                format!("corrupt safetensors: a header of {n} bytes in a file of {length}"),
            ));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .map_err(|e| VolumeError::io(&path, e))?;
        let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header)
            .map_err(|e| VolumeError::dataset(&path, format!("corrupt safetensors: {e}")))?;
        let want = record.shape.zyx().to_vec();
        let data_end = metadata
            .tensors()
            .values()
            .map(|t| t.data_offsets.1 as u64)
            .max()
            .unwrap_or(0);
        if 8 + n + data_end != length {
            return Err(VolumeError::dataset(
                &path,
                format!(
                    "corrupt safetensors: the header describes {} bytes, the file holds {length}",
                    8 + n + data_end
                ),
            ));
        }
        let find = |name: &str, dtype: safetensors::Dtype| -> Result<u64> {
            match metadata.info(name) {
                Some(t) if t.dtype == dtype && t.shape == want => {
                    Ok(8 + n + t.data_offsets.0 as u64)
                }
                Some(t) => Err(VolumeError::dataset(
                    &path,
                    format!(
                        "{name} tensor is {:?} {:?}, manifest says {dtype:?} {want:?}",
                        t.dtype, t.shape
                    ),
                )),
                None => Err(VolumeError::dataset(&path, format!("no {name} tensor"))),
            }
        };
        let image_at = find("image", safetensors::Dtype::F32)?;
        let label_at = if record.has_label {
            Some(find("label", safetensors::Dtype::U8)?)
        } else {
            None
        };
        Ok(CaseFile {
            path,
            shape: record.shape,
            image_at,
            label_at,
        })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file holds a label.
    pub fn has_label(&self) -> bool {
        self.label_at.is_some()
    }

    /// Bytes the whole case takes in memory (image and label).
    pub fn resident_bytes(&self) -> u64 {
        let per_voxel = if self.has_label() { 5 } else { 4 };
        self.shape.voxels() as u64 * per_voxel
    }

    /// The image inside `window`, x fastest; refuses a non-finite voxel.
    pub fn read_image(&self, window: GridBox) -> Result<Vec<f32>> {
        let image: Vec<f32> = self.read_box(self.image_at, window)?;
        if let Some(i) = image.iter().position(|v| !v.is_finite()) {
            return Err(VolumeError::dataset(
                &self.path,
                format!(
                    "image voxel {i} of the box {window:?} holds {}: a prepared image is finite (damaged cache; prepare again)",
                    image[i]
                ),
            ));
        }
        Ok(image)
    }

    /// The label inside `window`, x fastest; refuses a value over 1.
    pub fn read_label(&self, window: GridBox) -> Result<Vec<u8>> {
        let at = self
            .label_at
            .ok_or_else(|| VolumeError::dataset(&self.path, "the case has no label"))?;
        let label: Vec<u8> = self.read_box(at, window)?;
        if let Some(i) = label.iter().position(|&v| v > 1) {
            return Err(VolumeError::dataset(
                &self.path,
                format!(
                    "label voxel {i} of the box {window:?} holds {}: a prepared label is 0 or 1 (damaged cache; prepare again)",
                    label[i]
                ),
            ));
        }
        Ok(label)
    }

    /// The box `window` of the array at `at`: per plane, one read of the
    /// rows the box covers, straight into the result when the box spans
    /// whole rows (a whole case is read with no second copy), else
    /// through one plane's buffer. Safetensors is little-endian, as every
    /// target dtml builds for.
    fn read_box<T: bytemuck::Pod>(&self, at: u64, window: GridBox) -> Result<Vec<T>> {
        if !window.fits(self.shape) {
            return Err(VolumeError::invalid(
                &self.path,
                format!("box {window:?} outside the case's grid {:?}", self.shape),
            ));
        }
        let elem = std::mem::size_of::<T>();
        let [nx, ny, _] = self.shape.xyz();
        let [bx, by, bz] = window.size.xyz();
        let file = File::open(&self.path).map_err(|e| VolumeError::io(&self.path, e))?;
        let mut out = vec![T::zeroed(); bx * by * bz];
        let whole_rows = bx == nx;
        let mut rows = if whole_rows {
            Vec::new()
        } else {
            vec![0u8; by * nx * elem]
        };
        let plane_bytes = bx * by * elem;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        for (k, plane) in bytes.chunks_exact_mut(plane_bytes.max(1)).enumerate() {
            let z = window.start.z() + k;
            let first = (z * ny + window.start.y()) * nx;
            let offset = at + (first * elem) as u64;
            let read = if whole_rows {
                read_exact_at(&file, plane, offset)
            } else {
                read_exact_at(&file, &mut rows, offset)
            };
            read.map_err(|e| VolumeError::io(&self.path, e))?;
            if !whole_rows {
                let x0 = window.start.x() * elem;
                for (dst, row) in plane
                    .chunks_exact_mut(bx * elem)
                    .zip(rows.chunks_exact(nx * elem))
                {
                    dst.copy_from_slice(&row[x0..x0 + bx * elem]);
                }
            }
        }
        Ok(out)
    }
}

/// Fills `buf` from `offset` without moving a shared cursor.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fills `buf` from `offset` (the file is this read's own).
#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_fit_only_inside_the_grid() {
        let shape = Xyz::new(4, 3, 2);
        assert!(GridBox::whole(shape).fits(shape));
        let inside = GridBox {
            start: Xyz::new(1, 1, 1),
            size: Xyz::new(3, 2, 1),
        };
        assert!(inside.fits(shape));
        let past = GridBox {
            start: Xyz::new(2, 0, 0),
            size: Xyz::new(3, 1, 1),
        };
        assert!(!past.fits(shape));
        let overflow = GridBox {
            start: Xyz::new(usize::MAX, 0, 0),
            size: Xyz::new(2, 1, 1),
        };
        assert!(!overflow.fits(shape));
    }
}
