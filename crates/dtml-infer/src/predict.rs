//! Segmenting a list of scans into an output folder (`dtml predict`): a
//! mask per scan on the scan's grid and header, optional f32 maps beside
//! it, finished scans kept when a killed job runs again.

use crate::error::{InferError, Result};
use crate::infer::{InferenceOptions, Students, predict_volume, read_scan};
use crate::outputs::{MapKind, map_file, mask_file};
use dtml_volume::files::same_file;
use dtml_volume::{Volume, VoxelData, Xyz, write_mask, write_nifti};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which scans to segment, with what, into where.
pub struct PredictionJob<'a> {
    pub students: &'a Students<'a>,
    pub opts: &'a InferenceOptions,
    /// `(case, scan)` pairs (this shard's).
    pub cases: Vec<(String, PathBuf)>,
    /// Volume of a 4D scan to segment, as the user chose it.
    pub channel: Option<usize>,
    /// The channel the students were trained on (`run.json`): without a
    /// choice, that volume of a scan of several volumes; a single-volume
    /// scan is read as it is (nnU-Net keeps one file per channel).
    pub trained_channel: Option<usize>,
    pub out: &'a Path,
    /// Also write the probability map (the disagreement map is written
    /// when `opts.disagreement` asks for it).
    pub probability: bool,
    /// Scans whose files are all in `out` already count as done (they are
    /// this job's: see [`crate::shard::Record::claim`]).
    pub keep: bool,
}

/// Progress of [`run_prediction`].
pub enum PredictionEvent<'a> {
    /// Before the first scan: how many are done already and to do.
    Started { done: usize, to_do: usize },
    /// After each scan.
    Case {
        case: &'a str,
        shape: Xyz<usize>,
        foreground_voxels: usize,
        seconds: f64,
    },
}

impl PredictionJob<'_> {
    /// Every file a finished scan has in `out`.
    fn outputs(&self, case: &str) -> Vec<PathBuf> {
        let mut files = vec![mask_file(self.out, case)];
        if self.opts.disagreement {
            files.push(map_file(self.out, case, MapKind::Disagreement));
        }
        if self.probability {
            files.push(map_file(self.out, case, MapKind::Probability));
        }
        files
    }
}

/// Segments the job's scans that are not done yet, writing each scan's
/// files atomically; returns how many were segmented. A mask that would
/// replace its own scan is refused before any inference.
pub fn run_prediction(
    job: &PredictionJob,
    on_event: &mut dyn FnMut(PredictionEvent),
) -> Result<usize> {
    dtml_volume::atomic::check_writable(job.out)?;
    let (done, to_do): (Vec<_>, Vec<_>) = job
        .cases
        .iter()
        .partition(|(case, _)| job.keep && job.outputs(case).iter().all(|p| p.is_file()));
    for (case, scan) in &to_do {
        if same_file(&mask_file(job.out, case), scan) {
            return Err(InferError::file(
                scan,
                "the mask would overwrite its own scan; choose another --out",
            ));
        }
    }
    on_event(PredictionEvent::Started {
        done: done.len(),
        to_do: to_do.len(),
    });
    for (case, scan) in &to_do {
        let start = Instant::now();
        let (volume, image) = match (job.channel, job.trained_channel) {
            (Some(c), _) => read_scan(scan, Some(c))?,
            (None, Some(c)) => read_scan(scan, Some(c))
                .or_else(|first| read_scan(scan, None).map_err(|_| first))?,
            (None, None) => read_scan(scan, None)?,
        };
        let p = predict_volume(job.students, &image, volume.shape, job.opts)
            .map_err(|e| InferError::file(scan, format!("predicting: {e}")))?;
        let foreground_voxels = p.mask.iter().map(|&v| v as usize).sum::<usize>();
        write_mask(&mask_file(job.out, case), p.mask, &volume)?;
        let write_map = |values: Vec<f32>, kind: MapKind| -> Result<()> {
            let map = Volume::new(
                VoxelData::F32(values),
                volume.shape,
                volume.geometry.clone(),
            )?;
            Ok(write_nifti(&map_file(job.out, case, kind), &map)?)
        };
        if let Some(d) = p.disagreement {
            write_map(d, MapKind::Disagreement)?;
        }
        if job.probability {
            write_map(p.probability, MapKind::Probability)?;
        }
        on_event(PredictionEvent::Case {
            case,
            shape: volume.shape,
            foreground_voxels,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(to_do.len())
}
