//! What a run checks and loads before its first step: the run directory
//! and the checkpoint a resume continues, the cases, and whether the patch
//! and the step's memory fit.

use super::*;

/// Bytes of training memory per voxel of a patch, per sample, per unit of
/// width and per network: an upper bound from the step bench's peak RSS.
/// Both sizes gave about 90 while the V-Net ran as a graph of layers; with
/// the trunk as one node (`dtml_model`'s `vnet/trunk.rs`) the paper size
/// gives 50 and the demo 67 (fixed costs weigh more there). The bound stays
/// at 90: MC-Net's extra decoders still run as a graph of layers.
pub(super) const BYTES_PER_VOXEL_SAMPLE_WIDTH_NET: f64 = 90.0;

/// An extra decoder (MC-Net's) in networks: measured peak RSS at 48x48x32,
/// width 8, 4 patches: supervised 283 MB, dtml (two networks) 492 MB,
/// mc-net 526 MB, mc-net-plus 790 MB; the interpolating up-sampling keeps
/// more than the transposed convolution does.
pub(super) const EXTRA_DECODER_NETS: f64 = 1.2;

/// Refuses, before any case is loaded, a patch that would be mostly zero
/// padding (over 4 times the largest prepared training case on an axis)
/// or a step that needs more memory than the machine has available.
pub(super) fn check_patch(cfg: &TrainConfig, data: &PreparedDataset) -> Result<()> {
    let largest = data
        .cases(Role::Labelled)
        .chain(data.cases(Role::Unlabelled))
        .fold(Xyz::splat(0), |m, case| m.zip_with(case.shape, usize::max));
    if let Some(a) = (0..3).find(|&a| cfg.patch[a] > 4 * largest[a].max(16)) {
        return Err(TrainError::Config(format!(
            "patch {:?} is over 4 times the largest prepared case {:?} along {}: training would see mostly zero padding; choose a patch near the case size",
            cfg.patch, largest, AXIS_NAMES[a]
        )));
    }
    check_step_memory(cfg)
}

/// Bytes a training step needs (patch, batch, width, networks and the
/// method's own state): the measured peak of the step bench per unit.
pub(super) fn step_memory_bytes(cfg: &TrainConfig) -> f64 {
    let voxels = cfg.patch.voxels() as f64;
    let samples = (cfg.labelled_batch + cfg.unlabelled_batch) as f64;
    let method = cfg.plugin();
    let networks =
        method.networks().len() as f64 + EXTRA_DECODER_NETS * method.extra_decoders().len() as f64;
    voxels * samples * cfg.width as f64 * networks * BYTES_PER_VOXEL_SAMPLE_WIDTH_NET
        + method.state_memory_bytes(cfg, voxels * samples)
}

/// The memory check of a training step alone (patch, batch, width,
/// networks), run before the cases are loaded.
pub(super) fn check_step_memory(cfg: &TrainConfig) -> Result<()> {
    let samples = cfg.labelled_batch + cfg.unlabelled_batch;
    dtml_volume::confine::check_memory(
        Path::new("--patch"),
        &format!(
            "a training step at patch {:?}, batch {}, width {}",
            cfg.patch, samples, cfg.width
        ),
        step_memory_bytes(cfg),
    )
    .map_err(|e| TrainError::Config(e.to_string()))
}

/// A resume continues the run it finds, on the same data with the same
/// settings: anything else would be a different run under the old name.
pub(super) fn check_resume(saved: &TrainerState, req: &TrainRequest) -> Result<()> {
    if !dtml_volume::files::same_file(&saved.dataset, &req.data.dir) {
        return Err(TrainError::Config(format!(
            "--resume: the run in {} trained on {}, not {}; resume it on its own data or start a new run in another folder",
            req.run_dir.display(),
            saved.dataset.display(),
            req.data.dir.display()
        )));
    }
    if let Some(saved_digest) = &saved.manifest_digest
        && *saved_digest != req.data.manifest_digest()
    {
        return Err(TrainError::Config(format!(
            "--resume: the prepared data in {} changed since the run in {} started (the cache was prepared again); resume needs the cache it trained on, or start a new run in another folder",
            req.data.dir.display(),
            req.run_dir.display()
        )));
    }
    let changes = checkpoint::changes(&saved.config, &req.config);
    if !changes.is_empty() {
        return Err(TrainError::Config(format!(
            "--resume would change the run in {}: {}; a resumed run continues with its own settings (drop those flags, or start a new run in another folder)",
            req.run_dir.display(),
            changes.join(", ")
        )));
    }
    Ok(())
}

/// Finds the run's checkpoint as `--resume` asks (or its absence) and
/// settles the configuration: the checkpoint's on resume.
pub(super) fn open_run(
    req: &TrainRequest,
    group: &dyn Collective,
) -> Result<(RunLocks, Option<checkpoint::Loaded>, TrainConfig)> {
    let run_dir = req.run_dir;
    // Rank 0 writes the run; every rank reads the cache. Every rank learns
    // whether all could take their locks, so none waits in a collective
    // for a rank that has returned.
    let locked = (|| -> Result<RunLocks> {
        let cache = dtml_volume::output::lock_input(&req.data.dir)?;
        // The cache may have been prepared again between its opening and
        // its lock: the run trains on what the lock now protects.
        if cache.is_some()
            && PreparedDataset::open(&req.data.dir)?.manifest_digest() != req.data.manifest_digest()
        {
            return Err(TrainError::Config(format!(
                "{} was prepared again while this run started; start it again",
                req.data.dir.display()
            )));
        }
        let run = if group.rank() == 0 {
            Some(dtml_volume::output::claim(
                run_dir,
                &RUN_KIND,
                &[&req.data.dir],
                dtml_volume::output::LockMode::Exclusive,
                "--out",
            )?)
        } else {
            None
        };
        Ok((run, cache))
    })();
    let mut all_locked = [if locked.is_ok() { 1.0f32 } else { 0.0 }];
    group.all_reduce_mean(&mut all_locked)?;
    let (run, cache) = locked?;
    if all_locked[0] < 1.0 {
        return Err(TrainError::Config(format!(
            "another rank could not lock the run folder {} or its cache (its error says why)",
            run_dir.display()
        )));
    }
    let loaded = match (req.resume, checkpoint::find(run_dir)) {
        (true, Some(dir)) => Some(checkpoint::load(&dir)?),
        (true, None) => {
            return Err(TrainError::file(
                run_dir,
                "--resume: no checkpoint in this run directory",
            ));
        }
        (false, Some(_)) => {
            return Err(TrainError::file(
                run_dir,
                "already holds a training checkpoint; pass --resume to continue it or choose another output folder",
            ));
        }
        (false, None) => None,
    };
    let cfg = match &loaded {
        Some(l) => {
            check_resume(&l.trainer, req)?;
            if l.trainer.world_size != group.size() {
                return Err(TrainError::Config(format!(
                    "--resume: the run in {} was trained by {} rank(s), this job has {}; resume it with as many (each rank's batches depend on its rank)",
                    run_dir.display(),
                    l.trainer.world_size,
                    group.size()
                )));
            }
            TrainConfig {
                checkpoint_every: req.config.checkpoint_every,
                threads: req.config.threads,
                data_memory: req.config.data_memory,
                ..l.trainer.config.clone()
            }
        }
        None => req.config.clone(),
    };
    cfg.validate()?;
    // A run that fails before writing anything leaves no folder behind
    // (the lock removes one it created and left empty).
    Ok(((run, cache), loaded, cfg))
}

/// The run folder's lock (rank 0) and the cache's shared lock.
pub(super) type RunLocks = (
    Option<dtml_volume::output::FolderLock>,
    Option<dtml_volume::output::FolderLock>,
);

/// A run folder: `run.json`, or before the first export, a checkpoint or
/// the training log.
pub const RUN_KIND: dtml_volume::output::Kind = dtml_volume::output::Kind {
    name: "run",
    records: &[
        dtml_infer::run::RUN_FILE,
        "checkpoint/trainer.json",
        "checkpoint.previous/trainer.json",
        crate::log::LOG_FILE,
    ],
    recognise: is_run_record,
    only: None,
};

fn is_run_record(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = path.parent().unwrap_or(Path::new("."));
    if name == dtml_infer::run::RUN_FILE {
        dtml_infer::run::RunInfo::read(dir).is_ok()
    } else if name == crate::log::LOG_FILE {
        crate::log::read_log(dir).is_ok()
    } else {
        checkpoint::load_state(dir).is_ok()
    }
}

/// The cases a run trains on (checked, in memory within the run's data
/// budget, the rest read per patch: [`crate::cases`]) and validates on.
/// The default budget is shared by the `ranks` of a data-parallel run,
/// which may all run on this machine.
pub(super) fn training_cases<'a>(
    data: &'a PreparedDataset,
    cfg: &TrainConfig,
    ranks: usize,
) -> Result<(TrainingSet, Vec<&'a CaseRecord>)> {
    let labelled: Vec<_> = data.cases(Role::Labelled).map(|r| (r, true)).collect();
    let unlabelled: Vec<_> = if cfg.plugin().uses_unlabelled() {
        data.cases(Role::Unlabelled).map(|r| (r, false)).collect()
    } else {
        Vec::new()
    };
    let budget = cfg.data_memory_bytes(ranks, step_memory_bytes(cfg) as u64);
    let mut cases =
        crate::cases::open_cases(data, &[labelled, unlabelled.clone()].concat(), budget)?;
    let unlabelled = cases.split_off(cases.len() - unlabelled.len());
    let set = TrainingSet {
        labelled: cases,
        unlabelled,
    };
    let all = || set.labelled.iter().chain(&set.unlabelled);
    let resident = all().filter(|c| c.is_resident()).count();
    let validation: Vec<_> = data
        .cases(Role::Validation)
        .filter(|c| c.has_label)
        .collect();
    tracing::info!(
        "{}: {} labelled, {} unlabelled, {} validation cases; {} iterations; {} of {} training cases in memory (data budget {}), the rest read from the cache per patch",
        cfg.method.name(),
        set.labelled.len(),
        set.unlabelled.len(),
        validation.len(),
        cfg.iterations,
        resident,
        all().count(),
        match budget {
            b if b >= u64::MAX / 4 => "unlimited".to_string(),
            b => format!("{} MiB", b >> 20),
        }
    );
    Ok((set, validation))
}
