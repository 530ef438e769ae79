//! What a prepared case leaves beside its file so a later `prepare` need
//! not build it again: `cases/<id>.receipt.json`, written after the case's
//! file, with the case's record, its warnings and the inputs it was built
//! from. A killed or failed prepare keeps its staging folder, and the next
//! run reuses every case whose receipt still matches; a prepare into an
//! existing cache reuses that cache's matching cases (hard links), so
//! adding scans to a dataset prepares only the new ones.
//!
//! A source is recognised by its path, length and modification time, as
//! make and cargo recognise theirs: reading every scan again to hash it
//! would cost a large part of preparing it.

use super::*;

/// Suffix of a case's receipt beside its `.safetensors` file.
pub(super) const RECEIPT_SUFFIX: &str = ".receipt.json";

/// A source file as found: where, how long, when last modified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SourceStamp {
    path: PathBuf,
    bytes: u64,
    modified_ns: u64,
}

impl SourceStamp {
    fn of(path: &Path) -> Result<SourceStamp> {
        let meta = std::fs::metadata(path).map_err(|e| VolumeError::io(path, e))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(SourceStamp {
            path: path.to_path_buf(),
            bytes: meta.len(),
            modified_ns,
        })
    }
}

/// Everything a case's prepared file depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct CaseInputs {
    cache_version: u32,
    id: String,
    role: Role,
    image: SourceStamp,
    label: Option<SourceStamp>,
    channel: Option<usize>,
    options: serde_json::Value,
    declared_labels: Vec<i64>,
}

impl CaseInputs {
    pub(super) fn of(
        case: &CaseFiles,
        role: Role,
        options: &PrepareOptions,
        declared_labels: &[i64],
    ) -> Result<CaseInputs> {
        Ok(CaseInputs {
            cache_version: CACHE_VERSION,
            id: case.id.clone(),
            role,
            image: SourceStamp::of(&case.image)?,
            label: case.label.as_deref().map(SourceStamp::of).transpose()?,
            channel: case.channel,
            options: serde_json::to_value(options).unwrap_or_default(),
            declared_labels: declared_labels.to_vec(),
        })
    }
}

/// A receipt: the inputs and what preparing them gave.
#[derive(Serialize, Deserialize)]
struct Receipt {
    inputs: CaseInputs,
    record: CaseRecord,
    warnings: Vec<String>,
    values_present: BTreeSet<i64>,
}

fn receipt_path(folder: &Path, case_file: &str) -> PathBuf {
    folder.join(format!("{case_file}{RECEIPT_SUFFIX}"))
}

/// Writes the receipt of `prepared` into `folder` (after its case file).
pub(super) fn write(folder: &Path, inputs: &CaseInputs, prepared: &Prepared) -> Result<()> {
    let path = receipt_path(folder, &prepared.record.file);
    let receipt = Receipt {
        inputs: inputs.clone(),
        record: prepared.record.clone(),
        warnings: prepared.warnings.clone(),
        values_present: prepared.values_present.clone(),
    };
    let json =
        serde_json::to_vec(&receipt).map_err(|e| VolumeError::invalid(&path, e.to_string()))?;
    write_bytes_atomic(&path, &json)
}

/// The case `inputs` describes as prepared in `folder`, if its receipt
/// matches and its file is whole (header and length as the record says).
fn find(folder: &Path, inputs: &CaseInputs) -> Option<Prepared> {
    let file = format!("cases/{}.safetensors", inputs.id);
    let bytes = std::fs::read(receipt_path(folder, &file)).ok()?;
    let receipt: Receipt = serde_json::from_slice(&bytes).ok()?;
    if receipt.inputs != *inputs || receipt.record.file != file {
        return None;
    }
    CaseFile::open(&folder.join(&file), &receipt.record).ok()?;
    Some(Prepared {
        record: receipt.record,
        warnings: receipt.warnings,
        values_present: receipt.values_present,
    })
}

/// The case `inputs` describes, already prepared: in `staging` (a run
/// that did not finish), else in the published cache `out`, whose files
/// are linked (copied where links fail) into `staging` with their receipt.
pub(super) fn reuse(staging: &Path, out: &Path, inputs: &CaseInputs) -> Option<Prepared> {
    if let Some(found) = find(staging, inputs) {
        return Some(found);
    }
    let found = find(out, inputs)?;
    let file = &found.record.file;
    for name in [file.clone(), format!("{file}{RECEIPT_SUFFIX}")] {
        let (from, to) = (out.join(&name), staging.join(&name));
        let _ = std::fs::remove_file(&to);
        if std::fs::hard_link(&from, &to).is_err() && std::fs::copy(&from, &to).is_err() {
            return None;
        }
    }
    Some(found)
}
