//! What data-parallel training needs of a group of processes (ranks):
//! their number, this one's rank, the mean of a flat buffer over all of
//! them, and a barrier. The trainer averages every step's gradients in one
//! buffer (one call per step, not one per tensor), so every rank applies
//! the same update to the same weights.
//!
//! Semantics, as PyTorch DDP's defaults: identical initial weights on every
//! rank (the same seed); each rank draws its own batches and dropout masks
//! from `(seed, rank, iteration)` ([`rank_seed`]); BatchNorm statistics are
//! each rank's own; rank 0 alone logs, validates and writes checkpoints.
//! [`Solo`] is the group of one (every run that is not data-parallel);
//! [`LocalGroup`] runs ranks as threads of one process, for tests.
//!
//! ```
//! use dtml_train::collective::{Collective, LocalGroup};
//! let ranks = LocalGroup::new(2);
//! let handles: Vec<_> = ranks
//!     .into_iter()
//!     .map(|g| std::thread::spawn(move || {
//!         let mut buf = vec![g.rank() as f32; 3];
//!         g.all_reduce_mean(&mut buf).unwrap();
//!         buf
//!     }))
//!     .collect();
//! for h in handles {
//!     assert_eq!(h.join().unwrap(), vec![0.5; 3]);
//! }
//! ```

use crate::error::{Result, TrainError};
use std::sync::{Arc, Barrier, Mutex};

/// A group of ranks training one model together.
pub trait Collective {
    /// This rank, from 0.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise mean over all
    /// ranks' `buf` (the same length everywhere).
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// The group of one process.
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_mean(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// The seed of rank `rank`'s batches and dropout: the run's own seed on
/// rank 0 (so one rank trains exactly as a run that is not parallel),
/// distinct streams on the others.
pub fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        seed
    } else {
        seed ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
    }
}

struct Shared {
    size: usize,
    barrier: Barrier,
    sum: Mutex<Vec<f32>>,
}

/// Ranks as threads of one process (tests, and a reference for the
/// semantics a multi-process backend must match).
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// The `size` members of a new group; give each to its own thread.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            sum: Mutex::new(Vec::new()),
        });
        (0..size)
            .map(|rank| LocalGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        let poisoned = |_| TrainError::Other("a rank of the local group panicked".into());
        let s = &self.shared;
        s.barrier.wait();
        if self.rank == 0 {
            *s.sum.lock().map_err(poisoned)? = vec![0.0; buf.len()];
        }
        s.barrier.wait();
        {
            let mut sum = s.sum.lock().map_err(poisoned)?;
            if sum.len() != buf.len() {
                return Err(TrainError::Other(format!(
                    "all-reduce of {} values on rank {} but {} on rank 0",
                    buf.len(),
                    self.rank,
                    sum.len()
                )));
            }
            for (a, b) in sum.iter_mut().zip(buf.iter()) {
                *a += *b;
            }
        }
        s.barrier.wait();
        {
            let sum = s.sum.lock().map_err(poisoned)?;
            let n = s.size as f32;
            for (b, a) in buf.iter_mut().zip(sum.iter()) {
                *b = *a / n;
            }
        }
        s.barrier.wait();
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
}

/// The ranks of an MPI job (`mpirun`, `srun`): MPI through rsmpi and the
/// system's Open MPI or MPICH (cargo feature `mpi`). A rank that dies ends
/// the job: the MPI launcher tears the others down, no rank waits for ever.
#[cfg(feature = "mpi")]
pub struct MpiGroup {
    // Finalises MPI when dropped, after the communicator.
    world: mpi::topology::SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

#[cfg(feature = "mpi")]
impl MpiGroup {
    /// Initialises MPI (once per process) and joins the world.
    pub fn init() -> Result<MpiGroup> {
        let universe = mpi::initialize().ok_or_else(|| {
            TrainError::Other("MPI is already initialised in this process".into())
        })?;
        Ok(MpiGroup {
            world: universe.world(),
            _universe: universe,
        })
    }

    /// Whether this process was started by an MPI launcher (Open MPI,
    /// MPICH / Hydra, Slurm's PMI): then [`MpiGroup::init`] joins its job.
    pub fn launched() -> bool {
        [
            "OMPI_COMM_WORLD_SIZE",
            "PMI_SIZE",
            "PMIX_RANK",
            "MPI_LOCALNRANKS",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    }
}

#[cfg(feature = "mpi")]
impl Collective for MpiGroup {
    fn rank(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.size() as usize
    }
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        use mpi::traits::CommunicatorCollectives;
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, mpi::collective::SystemOperation::sum());
        let n = self.size() as f32;
        buf.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        use mpi::traits::CommunicatorCollectives;
        self.world.barrier();
        Ok(())
    }
}

#[cfg(feature = "mpi")]
impl MpiGroup {
    /// Rank 0's `buf` on every rank.
    pub fn broadcast(&self, buf: &mut [i8]) -> Result<()> {
        use mpi::traits::{Communicator, Root};
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }
}

/// One rank per GPU over NCCL (cargo feature `nccl`), started by an MPI
/// launcher: MPI gives the rank and world and carries NCCL's unique id from
/// rank 0 to the others (no rendezvous server of our own). Gradients come
/// to the host to be flattened, as on the CPU; an on-device bucket would
/// save two copies per step.
#[cfg(feature = "nccl")]
pub struct NcclGroup {
    comm: cudarc::nccl::Comm,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    mpi: MpiGroup,
}

#[cfg(feature = "nccl")]
impl NcclGroup {
    /// Joins the NCCL communicator of the MPI job on `device`'s stream.
    pub fn init(device: &candle_core::CudaDevice, mpi: MpiGroup) -> Result<NcclGroup> {
        let nccl = |e: cudarc::nccl::result::NcclError| TrainError::Other(format!("NCCL: {e:?}"));
        let mut bytes = [0 as std::ffi::c_char; 128];
        if mpi.rank() == 0 {
            bytes = *cudarc::nccl::Id::new().map_err(nccl)?.internal();
        }
        // `c_char` is i8 on x86 and u8 on aarch64: the casts are real there.
        #[allow(clippy::unnecessary_cast)]
        let mut wire: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        mpi.broadcast(&mut wire)?;
        for (b, w) in bytes.iter_mut().zip(&wire) {
            #[allow(clippy::unnecessary_cast)]
            {
                *b = *w as std::ffi::c_char;
            }
        }
        let stream = device.cuda_stream();
        let comm = cudarc::nccl::Comm::from_rank(
            stream.clone(),
            mpi.rank(),
            mpi.size(),
            cudarc::nccl::Id::uninit(bytes),
        )
        .map_err(nccl)?;
        Ok(NcclGroup { comm, stream, mpi })
    }
}

#[cfg(feature = "nccl")]
impl Collective for NcclGroup {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn size(&self) -> usize {
        self.mpi.size()
    }
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        let cuda = |e: cudarc::driver::DriverError| TrainError::Other(format!("CUDA: {e:?}"));
        let mut dev = self.stream.clone_htod(buf).map_err(cuda)?;
        self.comm
            .all_reduce_in_place(&mut dev, &cudarc::nccl::ReduceOp::Sum)
            .map_err(|e| TrainError::Other(format!("NCCL all-reduce: {e:?}")))?;
        self.stream.memcpy_dtoh(&dev, buf).map_err(cuda)?;
        let n = self.size() as f32;
        buf.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }
}

/// The first of `vars` holding a number.
fn env_index(vars: &[&str]) -> Option<usize> {
    vars.iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
}

/// This process's rank as its MPI launcher (Open MPI, MPICH / Hydra, PMIx)
/// announced it, before MPI is initialised (0 outside a launch): how the
/// CLI lets rank 0 alone report.
pub fn launcher_rank() -> usize {
    env_index(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]).unwrap_or(0)
}

/// This process's rank among the ranks on its node (0 outside a launch):
/// the GPU it takes.
pub fn node_local_rank() -> usize {
    env_index(&[
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ])
    .unwrap_or(0)
}

/// The data-parallel group this process belongs to and its device: the MPI
/// job that launched it (`mpirun`, `srun`; cargo feature `mpi`), over NCCL
/// with one GPU per rank (the node-local rank's) for a CUDA device with the
/// feature `nccl`; else a group of one on the device `kind` names.
pub fn launched_group(
    kind: dtml_infer::students::DeviceKind,
) -> Result<(Box<dyn Collective>, candle_core::Device)> {
    use dtml_infer::students::select_device;
    #[cfg(feature = "mpi")]
    if MpiGroup::launched() {
        let mpi = MpiGroup::init()?;
        tracing::info!(
            "data-parallel rank {} of {} (MPI); rank 0 logs and writes",
            mpi.rank(),
            mpi.size()
        );
        #[cfg(feature = "nccl")]
        if kind == dtml_infer::students::DeviceKind::Cuda {
            let local = node_local_rank();
            let device = candle_core::Device::new_cuda(local)?;
            let candle_core::Device::Cuda(cuda) = &device else {
                return Err(TrainError::Other(format!(
                    "GPU {local} is not a CUDA device"
                )));
            };
            let group = NcclGroup::init(cuda, mpi)?;
            return Ok((Box::new(group), device));
        }
        return Ok((Box::new(mpi), select_device(kind)?));
    }
    Ok((Box::new(Solo), select_device(kind)?))
}
