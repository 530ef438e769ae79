//! Where a run's training cases live: in memory while they fit the run's
//! data budget (`data_memory`), read from the cache patch by patch beyond
//! it, so a cohort larger than memory trains with memory that does not
//! grow with the number of cases.
//!
//! The labelled cases are kept first: every step samples each of them
//! more often than an unlabelled one (a few labelled cases share half of
//! each batch). A case read from the cache reads only the box its patch
//! covers ([`dtml_volume::CaseFile`]); the operating system's page cache
//! keeps the hot parts of those files without counting against the
//! process. Either way a patch gets the same voxels, so a run's batches,
//! and its losses, do not depend on the budget.

use crate::error::{Result, TrainError};
use dtml_volume::prepare::{CaseFile, GridBox};
use dtml_volume::{CaseRecord, PreparedCase, PreparedDataset, Xyz};
use std::borrow::Cow;

/// Bytes of training data kept in memory when the run does not say: half
/// of the memory available when it starts beyond what each step needs
/// (`step_bytes`), everything when unknown. The page cache keeps the rest
/// of the cache's hot files at no cost to the process.
pub fn default_data_memory(step_bytes: u64) -> u64 {
    dtml_volume::confine::available_memory()
        .map_or(u64::MAX, |bytes| bytes.saturating_sub(step_bytes) / 2)
}

/// One training case, in memory or in the cache.
pub struct TrainingCase {
    /// The prepared grid.
    pub shape: Xyz<usize>,
    data: CaseData,
}

enum CaseData {
    Resident(PreparedCase),
    OnDisk(CaseFile),
}

/// The voxels of a case a patch reads: the box `window` of its grid.
pub struct CaseWindow<'a> {
    pub window: GridBox,
    pub image: Cow<'a, [f32]>,
    pub label: Option<Cow<'a, [u8]>>,
}

impl TrainingCase {
    /// A case held in memory.
    pub fn resident(case: PreparedCase) -> TrainingCase {
        TrainingCase {
            shape: case.shape,
            data: CaseData::Resident(case),
        }
    }

    /// A case read from its cache file patch by patch.
    pub fn on_disk(file: CaseFile) -> TrainingCase {
        TrainingCase {
            shape: file.shape,
            data: CaseData::OnDisk(file),
        }
    }

    /// Whether the case is held in memory.
    pub fn is_resident(&self) -> bool {
        matches!(self.data, CaseData::Resident(_))
    }

    /// At least the box `needed` of the image, and of the label when
    /// `label`: a resident case lends all of its grid, a case on disk
    /// reads just the box.
    pub fn window(&self, needed: GridBox, label: bool) -> Result<CaseWindow<'_>> {
        let missing = || TrainError::Other("a labelled case was loaded without its label".into());
        match &self.data {
            CaseData::Resident(case) => Ok(CaseWindow {
                window: GridBox::whole(case.shape),
                image: Cow::Borrowed(&case.image),
                label: match (label, &case.label) {
                    (false, _) => None,
                    (true, Some(l)) => Some(Cow::Borrowed(l.as_slice())),
                    (true, None) => return Err(missing()),
                },
            }),
            CaseData::OnDisk(file) => Ok(CaseWindow {
                window: needed,
                image: Cow::Owned(file.read_image(needed)?),
                label: if label {
                    if !file.has_label() {
                        return Err(missing());
                    }
                    Some(Cow::Owned(file.read_label(needed)?))
                } else {
                    None
                },
            }),
        }
    }
}

/// Opens `records` (labelled ones first in the list's order) and keeps in
/// memory, in that order, those that fit `budget` bytes; the rest stay on
/// disk. Every case's file is checked against its record either way.
pub fn open_cases(
    data: &PreparedDataset,
    records: &[(&CaseRecord, bool)],
    budget: u64,
) -> Result<Vec<TrainingCase>> {
    use rayon::prelude::*;
    let files: Vec<CaseFile> = records
        .par_iter()
        .map(|(record, need_label)| {
            if *need_label && !record.has_label {
                return Err(TrainError::file(
                    &data.dir.join(&record.file),
                    "labelled case has no label in the cache",
                ));
            }
            Ok(data.open_case(record)?)
        })
        .collect::<Result<_>>()?;
    let mut left = budget;
    let keep: Vec<bool> = files
        .iter()
        .map(|f| {
            let bytes = f.resident_bytes();
            let fits = bytes <= left;
            if fits {
                left -= bytes;
            }
            fits
        })
        .collect();
    records
        .par_iter()
        .zip(files)
        .zip(keep)
        .map(|(((_, need_label), file), keep)| {
            Ok(if keep {
                let whole = GridBox::whole(file.shape);
                TrainingCase::resident(PreparedCase {
                    image: file.read_image(whole)?,
                    label: need_label.then(|| file.read_label(whole)).transpose()?,
                    shape: file.shape,
                })
            } else {
                TrainingCase::on_disk(file)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resident_case_lends_its_whole_grid() {
        let case = TrainingCase::resident(PreparedCase {
            image: vec![1.0; 8],
            label: None,
            shape: Xyz::new(2, 2, 2),
        });
        let needed = GridBox {
            start: Xyz::new(1, 0, 0),
            size: Xyz::new(1, 1, 1),
        };
        let w = case.window(needed, false).unwrap();
        assert_eq!(w.window, GridBox::whole(Xyz::new(2, 2, 2)));
        assert_eq!(w.image.len(), 8);
        assert!(case.window(needed, true).is_err());
    }
}
