//! The tiny prepared dataset and training recipe the data-parallel tests
//! share (threads as ranks, and MPI ranks), so both train the same thing.

use dtml_train::{Method, TrainConfig};
use dtml_volume::{LabelledSpec, PrepareOptions, Xyz};
use std::path::{Path, PathBuf};

/// `data-fixtures/synthetic-tiny` prepared into `dir/prepared` (2 of its
/// cases labelled, 16^3 patches); returns that folder.
pub fn tiny_prepared(dir: &Path) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/synthetic-tiny");
    let ds = dtml_volume::Dataset::open(&data, Default::default()).unwrap();
    let split = dtml_volume::dataset::split(&ds, &LabelledSpec::Count(2), None, None).unwrap();
    let out = dir.join("prepared");
    let options = PrepareOptions {
        patch: Xyz::new(16, 16, 16),
        margin: Xyz::new(Some(2), Some(2), None),
        ..Default::default()
    };
    dtml_volume::prepare(&ds.root, ds.layout, &split, &out, &options, &|_| {}).unwrap();
    out
}

/// DTML on that data at width 2, batch 1 + 1, a checkpoint every 2
/// iterations.
pub fn tiny_config(iterations: usize) -> TrainConfig {
    TrainConfig {
        method: Method::Dtml,
        iterations,
        patch: Xyz::new(16, 16, 16),
        width: 2,
        labelled_batch: 1,
        unlabelled_batch: 1,
        checkpoint_every: 2,
        validation_stride: Xyz::new(8, 8, 8),
        ..Default::default()
    }
}
