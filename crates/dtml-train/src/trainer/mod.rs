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
use crate::methods::{GivenDraws, MethodState, StateUpdate, StepDraws, Targets};
use crate::optim::Sgd;
use candle_core::{DType, Device, Tensor};
use dtml_infer::run::{RUN_FORMAT, RUN_VERSION, RunInfo, StudentFile, StudentRole};
use dtml_model::{VNet, VNetConfig};
use dtml_volume::axes::AXIS_NAMES;
use dtml_volume::{CaseRecord, PreparedDataset, Role, Xyz};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

mod outputs;
mod setup;
mod step;
use outputs::*;
use setup::*;
use step::*;
pub use step::{optimizer, train_step, train_step_with_draws};

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
    /// Set (from the event callback or another thread) to stop a run of
    /// one process after the iteration in progress: a checkpoint is saved
    /// there, so `resume` goes on exactly, and the trainer returns
    /// [`TrainError::Stopped`]. A data-parallel group ignores it (every
    /// rank would have to stop at the same iteration).
    pub stop: Option<&'a AtomicBool>,
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

/// The architecture every network of a run shares (the method's extra
/// decoders included).
pub fn network_config(cfg: &TrainConfig) -> VNetConfig {
    VNetConfig {
        width: cfg.width,
        dropout: cfg.dropout(),
        extra_decoders: cfg.plugin().extra_decoders().to_vec(),
        ..VNetConfig::default()
    }
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
    // Held to the end: no other process writes this run or rewrites its cache.
    let (_locks, loaded, cfg) = open_run(&req, group)?;
    // No rank writes before every rank has looked at the run directory.
    group.barrier()?;
    // This rank's batches and dropout; the initial weights come from `cfg`.
    let rank_cfg = TrainConfig {
        seed: rank_seed(cfg.seed, group.rank()),
        ..cfg.clone()
    };
    check_patch(&cfg, req.data)?;
    let (set, validation) = training_cases(req.data, &cfg, group.size())?;
    let device = req.device.clone();
    let net_cfg = network_config(&cfg);
    let mut init = rng_for(cfg.seed, Stream::Init, 0);
    let nets: Vec<VNet> = (cfg.plugin().networks().iter())
        .map(|spec| {
            let seed = init.next_u64();
            VNet::with_init(net_cfg.clone(), spec.init, seed, DType::F32, &device)
        })
        .collect::<std::result::Result<_, _>>()?;
    let refs: Vec<&VNet> = nets.iter().collect();
    let mut sgd = optimizer(&cfg, &refs);
    let mut state = cfg
        .plugin()
        .state(&cfg, init.next_u64(), DType::F32, &device)?;
    let (first, mut best) = match &loaded {
        Some(l) => {
            for (i, net) in nets.iter().enumerate() {
                l.restore_network(i, net)?;
            }
            let (optimizer, method_state) = split_method_state(&l.optimizer);
            sgd.load_state(&optimizer)?;
            if let Some(state) = state.as_mut() {
                state.restore(&method_state)?;
            }
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
            let step = step_in_group(
                &rank_cfg,
                &refs,
                &mut sgd,
                state.as_mut().map(|s| &mut **s as &mut dyn MethodState),
                &batch,
                &device,
                None,
                group,
            );
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
        let entry = run.after_step(entry, &sgd, state.as_deref(), &mut best, log, on_event)?;
        let done = entry.iteration;
        last = Some(entry);
        let stop = req.stop.is_some_and(|s| s.load(Ordering::SeqCst)) && group.size() == 1;
        if stop && done < cfg.iterations {
            if !run.checkpoint_due(done) {
                run.checkpoint(done, &sgd, state.as_deref(), best, on_event)?;
            }
            return Err(TrainError::Stopped {
                iteration: done,
                run_dir: req.run_dir.to_path_buf(),
            });
        }
    }
    run.finish(best, last)
}

/// The method's state rides in the checkpoint's optimizer file under this
/// prefix (SGD's keys are `{network}/{name}`, so the two cannot meet).
const METHOD_STATE_PREFIX: &str = "method/";

/// A checkpoint's optimizer tensors split into SGD's and the method
/// state's (prefix removed).
fn split_method_state(
    saved: &HashMap<String, Tensor>,
) -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let (mut sgd, mut method) = (HashMap::new(), HashMap::new());
    for (k, v) in saved {
        match k.strip_prefix(METHOD_STATE_PREFIX) {
            Some(name) => method.insert(name.to_string(), v.clone()),
            None => sgd.insert(k.clone(), v.clone()),
        };
    }
    (sgd, method)
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
        state: Option<&dyn MethodState>,
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
                export(run_dir, cfg, self.nets, done, self.req.data)?;
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
        if self.checkpoint_due(done) {
            self.checkpoint(done, sgd, state, *best, on_event)?;
        }
        Ok(entry)
    }

    /// Whether the run checkpoints after iteration `done` by itself.
    fn checkpoint_due(&self, done: usize) -> bool {
        let cfg = self.cfg;
        done == cfg.iterations
            || (cfg.checkpoint_every > 0 && done.is_multiple_of(cfg.checkpoint_every))
    }

    /// Saves the state after iteration `done` and redraws the curves.
    fn checkpoint(
        &self,
        done: usize,
        sgd: &Sgd,
        state: Option<&dyn MethodState>,
        best: Option<(usize, f64)>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let run_dir = self.req.run_dir;
        let trainer = TrainerState::new(
            done,
            self.cfg.clone(),
            self.req.data.dir.clone(),
            best,
            self.group.size(),
            self.req.data.manifest_digest(),
        );
        let mut optimizer = sgd.state()?;
        if let Some(method_state) = state {
            for (k, v) in method_state.save()? {
                optimizer.insert(format!("{METHOD_STATE_PREFIX}{k}"), v);
            }
        }
        checkpoint::save(run_dir, self.nets, &optimizer, &trainer)?;
        crate::plot::loss_curves(
            &read_log(run_dir)?,
            &run_dir.join(CURVES_FILE),
            crate::plot::LossScale::Linear,
        )?;
        on_event(Event::Checkpoint { iteration: done });
        Ok(())
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
            export(run_dir, cfg, self.nets, cfg.iterations, self.req.data)
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
}
