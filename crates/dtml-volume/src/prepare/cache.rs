//! The prepared cache on disk: `manifest.json` with a record per case, and
//! one safetensors file per case, read back checked (confined to the cache
//! folder, bounded, finite image, 0/1 label).

use super::*;

/// Version of the cache layout; bump when the manifest changes meaning.
pub const CACHE_VERSION: u32 = 1;
/// File name of the manifest inside a prepared folder.
pub const MANIFEST: &str = "manifest.json";
/// The largest manifest read (about a million cases).
pub const MANIFEST_MAX_BYTES: u64 = 1 << 30;

/// Everything known about one prepared case.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseRecord {
    pub id: String,
    pub role: Role,
    /// The safetensors file, relative to the prepared folder.
    pub file: String,
    /// Prepared grid.
    pub shape: Xyz<usize>,
    /// Whether the cache holds a label for this case.
    pub has_label: bool,
    pub image_source: PathBuf,
    pub channel: Option<usize>,
    pub label_source: Option<PathBuf>,
    pub original_shape: Xyz<usize>,
    pub original_dtype: DataType,
    pub original_geometry: Geometry,
    /// First voxel of the crop box in the original grid.
    pub crop_start: Xyz<usize>,
    /// One past the last voxel of the crop box in the original grid.
    pub crop_end: Xyz<usize>,
    /// Zero voxels added before the crop box on each axis.
    pub pad_before: Xyz<usize>,
    /// Mean and standard deviation used for the z-score.
    pub intensity_mean: f64,
    pub intensity_std: f64,
    /// Foreground voxels of the stored label (before crop).
    pub foreground_voxels: Option<u64>,
}

impl CaseRecord {
    /// Pastes a mask on the prepared grid back into the original grid
    /// (zeros outside the crop box, padding dropped).
    pub fn to_original(&self, prepared: &[u8]) -> Result<Vec<u8>> {
        if prepared.len() != self.shape.voxels() {
            return Err(VolumeError::invalid(
                &self.file,
                format!(
                    "mask has {} voxels, prepared grid {:?} needs {}",
                    prepared.len(),
                    self.shape,
                    self.shape.voxels()
                ),
            ));
        }
        let (ox, oy) = (self.original_shape.x(), self.original_shape.y());
        let (px, py) = (self.shape.x(), self.shape.y());
        let mut out = vec![0u8; self.original_shape.voxels()];
        for z in self.crop_start[2]..self.crop_end[2] {
            let qz = z - self.crop_start[2] + self.pad_before[2];
            for y in self.crop_start[1]..self.crop_end[1] {
                let qy = y - self.crop_start[1] + self.pad_before[1];
                let src = (qz * py + qy) * px + self.pad_before[0];
                let dst = (z * oy + y) * ox + self.crop_start[0];
                let n = self.crop_end[0] - self.crop_start[0];
                out[dst..dst + n].copy_from_slice(&prepared[src..src + n]);
            }
        }
        Ok(out)
    }

    /// Geometry of the prepared grid (its voxel (0,0,0) in world space).
    pub fn prepared_geometry(&self) -> Geometry {
        let off = self
            .crop_start
            .zip_with(self.pad_before, |c, p| c as i64 - p as i64);
        self.original_geometry.shifted(off)
    }
}

/// The manifest of a prepared folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub dataset: PathBuf,
    pub layout: Layout,
    pub options: PrepareOptions,
    pub cases: Vec<CaseRecord>,
}

/// A prepared case loaded from the cache. Arrays are x fastest, i.e. a
/// row-major `(Z, Y, X)` tensor.
#[derive(Debug, Clone)]
pub struct PreparedCase {
    pub image: Vec<f32>,
    pub label: Option<Vec<u8>>,
    pub shape: Xyz<usize>,
}

/// A prepared folder: its manifest and where it lives.
#[derive(Debug, Clone)]
pub struct PreparedDataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl PreparedDataset {
    /// Opens a prepared folder by reading its manifest.
    pub fn open(dir: &Path) -> Result<PreparedDataset> {
        let path = dir.join(MANIFEST);
        let text = crate::confine::read_bounded(&path, MANIFEST_MAX_BYTES, "manifest")?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| VolumeError::dataset(&path, format!("invalid manifest: {e}")))?;
        if manifest.version != CACHE_VERSION {
            return Err(VolumeError::dataset(
                &path,
                format!(
                    "cache version {} (this dtml reads {CACHE_VERSION}); prepare the data again",
                    manifest.version
                ),
            ));
        }
        let data = PreparedDataset {
            dir: dir.to_path_buf(),
            manifest,
        };
        for record in &data.manifest.cases {
            crate::dataset::resolve_inside(dir, &record.file, &path)?;
            for source in [Some(&record.image_source), record.label_source.as_ref()]
                .into_iter()
                .flatten()
            {
                let inside = source
                    .strip_prefix(&data.manifest.dataset)
                    .is_ok_and(|rest| {
                        rest.components().all(|c| {
                            matches!(
                                c,
                                std::path::Component::Normal(_) | std::path::Component::CurDir
                            )
                        })
                    });
                if !inside {
                    return Err(VolumeError::Outside {
                        path: path.clone(),
                        what: format!("source of case {}", record.id),
                        target: source.clone(),
                        root: data.manifest.dataset.clone(),
                    });
                }
            }
        }
        Ok(data)
    }

    /// A digest of the manifest as read (FNV-1a, 64 bits, hex): what a
    /// checkpoint records so a resume continues only on the same cache.
    pub fn manifest_digest(&self) -> String {
        let bytes = serde_json::to_vec(&self.manifest).unwrap_or_default();
        format!("{:016x}", crate::digest::fnv1a(bytes))
    }

    /// A case's original label or image file, checked to resolve inside the
    /// dataset folder the cache was prepared from ([`crate::confine`]).
    pub fn source(&self, record: &CaseRecord, file: &Path) -> Result<PathBuf> {
        crate::confine::inside(
            &self.manifest.dataset,
            file,
            &format!("source of case {}", record.id),
            &self.dir.join(MANIFEST),
        )
    }

    /// Records of one role.
    pub fn cases(&self, role: Role) -> impl Iterator<Item = &CaseRecord> {
        self.manifest.cases.iter().filter(move |c| c.role == role)
    }

    /// Loads one case's arrays, checked ([`CaseFile`]: the header against
    /// the record, a finite image, a 0/1 label).
    pub fn load(&self, record: &CaseRecord) -> Result<PreparedCase> {
        let file = self.open_case(record)?;
        let whole = GridBox::whole(record.shape);
        Ok(PreparedCase {
            image: file.read_image(whole)?,
            label: if file.has_label() {
                Some(file.read_label(whole)?)
            } else {
                None
            },
            shape: record.shape,
        })
    }
}
