//! The training loop all methods share: batches prepared one step ahead on
//! a worker thread, the networks' forward passes, the method's objective,
//! one backward pass, SGD on every trained parameter, logs, checkpoints,
//! validation and the exported run.

use crate::batch::{HostBatch, Stream, TrainingSet, batch_for, rng_for};
use crate::checkpoint::{self, TrainerState};
use crate::collective::{Collective, Solo, rank_seed};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::log::{IterationLog, LOG_FILE, open_log, read_log};
use crate::objective::{Targets, objective};
use crate::optim::Sgd;
use candle_core::{DType, Device, Tensor};
use dtml_infer::run::{RUN_FORMAT, RUN_VERSION, RunInfo, StudentFile, StudentRole};
use dtml_model::{Dropout, VNet, VNetConfig};
use dtml_volume::axes::AXIS_NAMES;
use dtml_volume::{CaseRecord, PreparedDataset, Role, Xyz};
use rand::Rng;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Loss and validation curves, redrawn at every checkpoint.
pub const CURVES_FILE: &str = "curves.png";
/// Mid-slice picture of a case after training.
pub const OVERLAY_FILE: &str = "overlay.png";

/// What a run trains on and where it writes.
pub struct TrainRequest<'a> {
    pub data: &'a PreparedDataset,
    pub run_dir: &'a Path,
    /// On resume, must equal the checkpoint's configuration but for
    /// `checkpoint_every` (see [`checkpoint::changes`]).
    pub config: TrainConfig,
    pub device: Device,
    pub resume: bool,
}

/// Progress reported to the caller (the CLI draws it).
pub enum Event<'a> {
    Started {
        first: usize,
        iterations: usize,
    },
    Iteration(&'a IterationLog),
    Validated {
        iteration: usize,
        dice: f64,
        best: bool,
    },
    Checkpoint {
        iteration: usize,
    },
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run: RunInfo,
    /// This rank's last iteration (every rank's loss is its own batch's).
    pub last: Option<IterationLog>,
    pub best: Option<(usize, f64)>,
    /// A hash of the bits of the final trained weights (not the BatchNorm
    /// statistics, which are each rank's own): equal on every rank of a
    /// data-parallel run.
    pub weights_digest: u64,
}

fn network_config(cfg: &TrainConfig) -> VNetConfig {
    VNetConfig {
        width: cfg.width,
        dropout: cfg.dropout,
        ..VNetConfig::default()
    }
}

fn roles(cfg: &TrainConfig) -> Vec<StudentRole> {
    if cfg.method.networks() == 2 {
        vec![StudentRole::Region, StudentRole::Boundary]
    } else {
        vec![StudentRole::Region]
    }
}

fn load_set(
    data: &PreparedDataset,
    role: Role,
    need_label: bool,
) -> Result<Vec<dtml_volume::PreparedCase>> {
    let records: Vec<_> = data.cases(role).collect();
    use rayon::prelude::*;
    records
        .par_iter()
        .map(|r| {
            if need_label && !r.has_label {
                return Err(TrainError::file(
                    &data.dir.join(&r.file),
                    "labelled case has no label in the cache",
                ));
            }
            Ok(data.load(r)?)
        })
        .collect()
}

/// Host batch to device tensors of the networks' `dtype`: images
/// `(N,1,Z,Y,X)`, labels and SDM targets `(L,1,Z,Y,X)`.
fn to_device(
    b: &HostBatch,
    patch: Xyz<usize>,
    device: &Device,
    dtype: DType,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let image = Tensor::from_slice(&b.image, patch.batch_dims(b.n, 1), device)?.to_dtype(dtype)?;
    let label: Vec<f32> = b.label.iter().map(|v| *v as f32).collect();
    let label =
        Tensor::from_vec(label, patch.batch_dims(b.labelled, 1), device)?.to_dtype(dtype)?;
    let sdm = match &b.sdm {
        Some(s) => {
            Some(Tensor::from_slice(s, patch.batch_dims(b.labelled, 1), device)?.to_dtype(dtype)?)
        }
        None => None,
    };
    Ok((image, label, sdm))
}

/// SGD over every trainable parameter of `nets`, keyed `"{net}/{name}"`
/// (the keys of the checkpoint's momentum buffers).
pub fn optimizer(cfg: &TrainConfig, nets: &[&VNet]) -> Sgd {
    let params = nets
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.named_trainable_vars()
                .into_iter()
                .map(move |(name, v)| (format!("{i}/{name}"), v))
        })
        .collect();
    Sgd::new(params, cfg.momentum, cfg.weight_decay)
}

/// Bytes of training memory per voxel of a patch, per sample, per unit of
/// width and per network: the measured peak RSS of the step bench (demo and
/// paper size both give about 90).
const BYTES_PER_VOXEL_SAMPLE_WIDTH_NET: f64 = 90.0;

/// How far the estimate may exceed the available memory before a run is
/// refused: the estimate is a measurement of two sizes, not a bound, and a
/// run that would fit must not be turned away.
const MEMORY_TOLERANCE: f64 = 1.25;

/// Refuses, before anything is allocated, a patch that would be mostly
/// zero padding (over 4 times the largest prepared case on an axis) or a
/// step that needs more memory than the machine has available.
fn check_patch(cfg: &TrainConfig, set: &TrainingSet) -> Result<()> {
    let largest = set
        .labelled
        .iter()
        .chain(&set.unlabelled)
        .fold(Xyz::splat(0), |m, case| m.zip_with(case.shape, usize::max));
    if let Some(a) = (0..3).find(|&a| cfg.patch[a] > 4 * largest[a].max(16)) {
        return Err(TrainError::Config(format!(
            "patch {:?} is over 4 times the largest prepared case {:?} along {}: training would see mostly zero padding; choose a patch near the case size",
            cfg.patch, largest, AXIS_NAMES[a]
        )));
    }
    let voxels = cfg.patch.voxels() as f64;
    let samples = (cfg.labelled_batch + cfg.unlabelled_batch) as f64;
    let need = voxels
        * samples
        * cfg.width as f64
        * cfg.method.networks() as f64
        * BYTES_PER_VOXEL_SAMPLE_WIDTH_NET;
    if let Some(avail) = dtml_volume::confine::available_memory()
        && need > MEMORY_TOLERANCE * avail as f64
    {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(TrainError::Config(format!(
            "a training step at patch {:?}, batch {}, width {} needs about {:.1} GiB but {:.1} GiB are available; lower the patch, batch or width",
            cfg.patch,
            samples,
            cfg.width,
            gib(need),
            gib(avail as f64)
        )));
    }
    Ok(())
}

/// A resume continues the run it finds, on the same data with the same
/// settings: anything else would be a different run under the old name.
fn check_resume(saved: &TrainerState, req: &TrainRequest) -> Result<()> {
    let same_data = match (saved.dataset.canonicalize(), req.data.dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => saved.dataset == req.data.dir,
    };
    if !same_data {
        return Err(TrainError::Config(format!(
            "--resume: the run in {} trained on {}, not {}; resume it on its own data or start a new run in another folder",
            req.run_dir.display(),
            saved.dataset.display(),
            req.data.dir.display()
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

/// Trains as `req` says; returns when the run is complete.
pub fn train(req: TrainRequest, on_event: &mut dyn FnMut(Event)) -> Result<TrainOutcome> {
    train_in_group(req, &Solo, on_event)
}

/// [`train`] as one rank of a data-parallel `group`
/// ([`crate::collective`]): every rank calls it with the same request.
pub fn train_in_group(
    req: TrainRequest,
    group: &dyn Collective,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrainOutcome> {
    let (loaded, cfg) = open_run(&req, group)?;
    // No rank writes before every rank has looked at the run directory.
    group.barrier()?;
    // This rank's batches and dropout; the initial weights come from `cfg`.
    let rank_cfg = TrainConfig {
        seed: rank_seed(cfg.seed, group.rank()),
        ..cfg.clone()
    };
    let (set, validation) = training_cases(req.data, &cfg)?;
    check_patch(&cfg, &set)?;
    let device = req.device.clone();
    let net_cfg = network_config(&cfg);
    let mut init = rng_for(cfg.seed, Stream::Init, 0);
    let nets: Vec<VNet> = (0..cfg.method.networks())
        .map(|_| VNet::new(net_cfg.clone(), init.next_u64(), DType::F32, &device))
        .collect::<std::result::Result<_, _>>()?;
    let refs: Vec<&VNet> = nets.iter().collect();
    let mut sgd = optimizer(&cfg, &refs);
    let (first, mut best) = match &loaded {
        Some(l) => {
            for (i, net) in nets.iter().enumerate() {
                l.restore_network(i, net)?;
            }
            sgd.load_state(&l.optimizer)?;
            (l.trainer.next_iteration, l.trainer.best)
        }
        None => (0, None),
    };
    let run = Session {
        req: &req,
        cfg: &cfg,
        nets: &refs,
        validation: &validation,
        group,
    };
    // Opened after the first step succeeds: a run that fails at once (a
    // non-finite loss, say) leaves nothing behind.
    let mut log = None;
    on_event(Event::Started {
        first,
        iterations: cfg.iterations,
    });
    let mut last = None;
    let mut next = if first < cfg.iterations {
        Some(batch_for(first, &rank_cfg, &set)?)
    } else {
        None
    };
    for t in first..cfg.iterations {
        let start = Instant::now();
        let batch = next
            .take()
            .ok_or_else(|| TrainError::Other("batch pipeline stalled".into()))?;
        // The next batch is assembled on another thread during this step.
        let (step, prefetched) = std::thread::scope(|s| {
            let ahead =
                (t + 1 < cfg.iterations).then(|| s.spawn(|| batch_for(t + 1, &rank_cfg, &set)));
            let step = step_in_group(&rank_cfg, &refs, &mut sgd, &batch, &device, None, group);
            let prefetched = ahead.map(|h| h.join().expect("batch worker panicked"));
            (step, prefetched)
        });
        next = prefetched.transpose()?;
        let (loss, parts) = step?;
        let entry = IterationLog {
            iteration: t + 1,
            loss,
            parts,
            lambda: cfg.lambda_at(t),
            lr: cfg.lr_at(t),
            seconds: start.elapsed().as_secs_f64(),
            validation_dice: None,
        };
        if group.rank() != 0 {
            last = Some(entry);
            continue;
        }
        if log.is_none() {
            log = Some(open_log(req.run_dir, first)?);
        }
        let log = log.as_mut().expect("opened above");
        last = Some(run.after_step(entry, &sgd, &mut best, log, on_event)?);
    }
    run.finish(best, last)
}

/// Finds the run's checkpoint as `--resume` asks (or its absence) and
/// settles the configuration: the checkpoint's on resume.
fn open_run(
    req: &TrainRequest,
    group: &dyn Collective,
) -> Result<(Option<checkpoint::Loaded>, TrainConfig)> {
    let run_dir = req.run_dir;
    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::file(run_dir, e))?;
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
                ..l.trainer.config.clone()
            }
        }
        None => req.config.clone(),
    };
    cfg.validate()?;
    Ok((loaded, cfg))
}

/// The cases a run trains on (loaded and checked) and validates on.
fn training_cases<'a>(
    data: &'a PreparedDataset,
    cfg: &TrainConfig,
) -> Result<(TrainingSet, Vec<&'a CaseRecord>)> {
    let set = TrainingSet {
        labelled: load_set(data, Role::Labelled, true)?,
        unlabelled: if cfg.method.uses_unlabelled() {
            load_set(data, Role::Unlabelled, false)?
        } else {
            Vec::new()
        },
    };
    let validation: Vec<_> = data
        .cases(Role::Validation)
        .filter(|c| c.has_label)
        .collect();
    tracing::info!(
        "{}: {} labelled, {} unlabelled, {} validation cases; {} iterations",
        cfg.method.name(),
        set.labelled.len(),
        set.unlabelled.len(),
        validation.len(),
        cfg.iterations
    );
    Ok((set, validation))
}

/// What every iteration of a run refers to.
struct Session<'a> {
    req: &'a TrainRequest<'a>,
    cfg: &'a TrainConfig,
    nets: &'a [&'a VNet],
    validation: &'a [&'a CaseRecord],
    group: &'a dyn Collective,
}

impl Session<'_> {
    /// After a step: validates (exporting the students when they improve),
    /// appends the log line, and checkpoints when due.
    fn after_step(
        &self,
        mut entry: IterationLog,
        sgd: &Sgd,
        best: &mut Option<(usize, f64)>,
        log: &mut std::fs::File,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<IterationLog> {
        let (cfg, run_dir) = (self.cfg, self.req.run_dir);
        let done = entry.iteration;
        let finished = done == cfg.iterations;
        if !self.validation.is_empty()
            && cfg.validate_every > 0
            && (done.is_multiple_of(cfg.validate_every) || finished)
        {
            let dice = validate(cfg, self.nets, self.req.data, self.validation)?;
            entry.validation_dice = Some(dice);
            let improved = best.is_none_or(|(_, d)| dice > d);
            if improved {
                *best = Some((done, dice));
                export(run_dir, cfg, self.nets, done, self.foreground())?;
            }
            on_event(Event::Validated {
                iteration: done,
                dice,
                best: improved,
            });
        }
        let log_path = run_dir.join(LOG_FILE);
        let line = serde_json::to_string(&entry).map_err(|e| TrainError::Other(e.to_string()))?;
        writeln!(log, "{line}").map_err(|e| TrainError::file(&log_path, e))?;
        log.flush().map_err(|e| TrainError::file(&log_path, e))?;
        on_event(Event::Iteration(&entry));
        if finished || (cfg.checkpoint_every > 0 && done.is_multiple_of(cfg.checkpoint_every)) {
            let state = TrainerState::new(
                done,
                cfg.clone(),
                self.req.data.dir.clone(),
                *best,
                self.group.size(),
            );
            checkpoint::save(run_dir, self.nets, &sgd.state()?, &state)?;
            crate::plot::loss_curves(
                &read_log(run_dir)?,
                &run_dir.join(CURVES_FILE),
                crate::plot::LossScale::Linear,
            )?;
            on_event(Event::Checkpoint { iteration: done });
        }
        Ok(entry)
    }

    /// The run's end: rank 0 exports the last students unless validation
    /// chose the best, and draws the overlay of a validation (or labelled)
    /// case; the other ranks wait for it and read what it wrote.
    fn finish(
        &self,
        best: Option<(usize, f64)>,
        last: Option<IterationLog>,
    ) -> Result<TrainOutcome> {
        let (cfg, run_dir) = (self.cfg, self.req.run_dir);
        let weights_digest = digest(self.nets)?;
        if self.group.rank() != 0 {
            self.group.barrier()?;
            let run = RunInfo::read(run_dir)?;
            return Ok(TrainOutcome {
                run,
                last,
                best,
                weights_digest,
            });
        }
        let run = if best.is_none() {
            export(run_dir, cfg, self.nets, cfg.iterations, self.foreground())
        } else {
            RunInfo::read(run_dir).map_err(Into::into)
        };
        // Released before an error returns too: the other ranks must not
        // wait for ever on a rank that failed.
        self.group.barrier()?;
        let run = run?;
        let shown = self
            .validation
            .first()
            .copied()
            .or_else(|| self.req.data.cases(Role::Labelled).next());
        if let Some(case) = shown {
            overlay(
                cfg,
                self.nets,
                self.req.data,
                case,
                &run_dir.join(OVERLAY_FILE),
            )?;
        }
        Ok(TrainOutcome {
            run,
            last,
            best,
            weights_digest,
        })
    }

    fn foreground(&self) -> &[i64] {
        &self.req.data.manifest.options.foreground
    }
}

/// Forward, objective, backward and update for one batch; returns the loss
/// and its parts, or an error if any is not finite (nothing is updated then).
///
/// `nets` are the method's networks (student A first), `sgd` holds their
/// trainable parameters. Public so `benches/step.rs` times exactly the step
/// the training loop runs.
pub fn train_step(
    cfg: &TrainConfig,
    nets: &[&VNet],
    sgd: &mut Sgd,
    batch: &HostBatch,
    device: &Device,
) -> Result<(f64, BTreeMap<String, f64>)> {
    train_step_with_masks(cfg, nets, sgd, batch, device, None)
}

/// [`train_step`] with given channel-dropout keep-masks, one (bottleneck,
/// last stage) pair of `(N, C)` tensors per network, in place of the
/// seeded stream: how the lockstep test feeds PyTorch's masks.
pub fn train_step_with_masks(
    cfg: &TrainConfig,
    nets: &[&VNet],
    sgd: &mut Sgd,
    batch: &HostBatch,
    device: &Device,
    masks: Option<&[(Tensor, Tensor)]>,
) -> Result<(f64, BTreeMap<String, f64>)> {
    step_in_group(cfg, nets, sgd, batch, device, masks, &Solo)
}

/// One step as one rank of `group`: the gradients are averaged over the
/// ranks before the update.
#[allow(clippy::too_many_arguments)]
fn step_in_group(
    cfg: &TrainConfig,
    nets: &[&VNet],
    sgd: &mut Sgd,
    batch: &HostBatch,
    device: &Device,
    masks: Option<&[(Tensor, Tensor)]>,
    group: &dyn Collective,
) -> Result<(f64, BTreeMap<String, f64>)> {
    let t = batch.iteration;
    let dtype = nets[0].dtype();
    let (image, label, sdm) = to_device(batch, cfg.patch, device, dtype)?;
    let mut dropout_rng = rng_for(cfg.seed, Stream::Dropout, t as u64);
    let outputs = nets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let dropout = match masks {
                Some(m) => Dropout::Masks(&m[i].0, &m[i].1),
                None => Dropout::Seeded(&mut dropout_rng),
            };
            n.forward(&image, true, dropout)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let targets = Targets {
        label: &label,
        sdm: sdm.as_ref(),
        labelled: batch.labelled,
    };
    let obj = objective(cfg.method, cfg, &outputs, &targets, cfg.lambda_at(t))?;
    let loss = obj.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let mut parts = BTreeMap::new();
    for (name, v) in &obj.parts {
        parts.insert(
            name.to_string(),
            v.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        );
    }
    if !loss.is_finite() {
        return Err(TrainError::NonFinite {
            iteration: t + 1,
            loss,
            parts: format!("{parts:?}"),
        });
    }
    let mut grads = obj.total.backward()?;
    sgd.average_gradients(&mut grads, group)?;
    sgd.step(&grads, cfg.lr_at(t))?;
    Ok((loss, parts))
}

/// The students and sliding window used on the run's own data: the
/// ensemble when there are two students, the training patch.
fn inference_setup<'a>(
    cfg: &TrainConfig,
    nets: &[&'a VNet],
) -> (
    dtml_infer::infer::Students<'a>,
    dtml_infer::infer::InferenceOptions,
) {
    use dtml_infer::infer::{Ensemble, InferenceOptions, Students};
    let students = Students {
        region: Some(nets[0]),
        boundary: nets.get(1).copied(),
    };
    let opts = InferenceOptions {
        patch: cfg.patch,
        stride: cfg.validation_stride,
        sharpness: cfg.sharpness as f32,
        ensemble: if nets.len() == 2 {
            Ensemble::Both
        } else {
            Ensemble::Region
        },
        ..InferenceOptions::default()
    };
    (students, opts)
}

/// Mean Dice of the students on the validation cases, on their original grids.
fn validate(
    cfg: &TrainConfig,
    nets: &[&VNet],
    data: &PreparedDataset,
    cases: &[&dtml_volume::CaseRecord],
) -> Result<f64> {
    let (students, opts) = inference_setup(cfg, nets);
    let results = dtml_infer::evaluate::evaluate_prepared(
        &students,
        data,
        cases,
        &opts,
        dtml_edt::Units::Millimetres,
        &mut |_| {},
    )?;
    let dices: Vec<f64> = results
        .iter()
        .map(|r| r.metrics.dice.unwrap_or(1.0))
        .collect();
    Ok(dices.iter().sum::<f64>() / dices.len().max(1) as f64)
}

/// Draws the final students' prediction on one prepared case.
fn overlay(
    cfg: &TrainConfig,
    nets: &[&VNet],
    data: &PreparedDataset,
    case: &dtml_volume::CaseRecord,
    path: &Path,
) -> Result<()> {
    let loaded = data.load(case)?;
    let (students, mut opts) = inference_setup(cfg, nets);
    opts.disagreement = nets.len() == 2;
    let pred = dtml_infer::infer::predict_volume(&students, &loaded.image, loaded.shape, &opts)?;
    crate::plot::overlay(
        &loaded.image,
        loaded.label.as_deref(),
        &pred.mask,
        pred.disagreement.as_deref(),
        loaded.shape,
        path,
    )
}

/// Writes the students' weights and `run.json` (what inference reads).
fn export(
    run_dir: &Path,
    cfg: &TrainConfig,
    nets: &[&VNet],
    iteration: usize,
    foreground: &[i64],
) -> Result<RunInfo> {
    let mut students = Vec::new();
    for (net, role) in nets.iter().zip(roles(cfg)) {
        let file = match role {
            StudentRole::Region => "student_a.safetensors",
            StudentRole::Boundary => "student_b.safetensors",
        };
        net.save_safetensors(&run_dir.join(file))?;
        students.push(StudentFile {
            role,
            file: file.into(),
        });
    }
    let info = RunInfo {
        format: RUN_FORMAT.into(),
        version: RUN_VERSION,
        method: cfg.method,
        network: nets[0].config().clone(),
        patch: cfg.patch,
        foreground: foreground.to_vec(),
        students,
        iteration,
        sharpness: cfg.sharpness,
    };
    info.write(run_dir)?;
    Ok(info)
}

/// FNV-1a over the bits of every trained weight of `nets`, in name order.
fn digest(nets: &[&VNet]) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for net in nets {
        for (name, var) in net.named_trainable_vars() {
            let values = var
                .as_tensor()
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            for b in name
                .bytes()
                .chain(values.iter().flat_map(|v| v.to_bits().to_le_bytes()))
            {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    Ok(h)
}
