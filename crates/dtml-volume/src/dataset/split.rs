//! Which cases are labelled, unlabelled, validation and test.

use super::*;

/// How many (or which) training cases are labelled.
#[derive(Debug, Clone)]
pub enum LabelledSpec {
    /// The first N training cases, in the dataset's order.
    Count(usize),
    /// A fraction of the training cases (rounded to nearest, at least 1).
    Fraction(f64),
    /// Ids from a list file.
    List(PathBuf),
}

impl LabelledSpec {
    /// The paper's labelled share (16 of 80 LA training cases): the default
    /// of `dtml prepare`.
    pub const PAPER_FRACTION: f64 = 0.2;
}

/// The role of a case in training and evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Labelled,
    Unlabelled,
    Validation,
    Test,
}

/// Cases assigned to roles.
#[derive(Debug, Clone)]
pub struct Split {
    pub cases: Vec<(CaseFiles, Role)>,
    /// Label values the dataset declares (`dataset.json`'s `labels`; none
    /// for LA): a labelled case holding only undeclared values and no
    /// foreground is a mask in another encoding (0/255), not an empty one.
    pub declared_labels: Vec<i64>,
}

impl Split {
    /// Cases of one role.
    pub fn of(&self, role: Role) -> impl Iterator<Item = &CaseFiles> {
        self.cases
            .iter()
            .filter(move |(_, r)| *r == role)
            .map(|(c, _)| c)
    }
}

/// Splits a dataset: validation cases (from a list) are held out of
/// training, then labelled cases are chosen, the rest of training is
/// unlabelled (their label files stay listed but are never used as
/// labels; only the reference-crop switch reads them), and the test set is the
/// dataset's own (`imagesTs` / `test.list`) or a list given here.
pub fn split(
    dataset: &Dataset,
    labelled: &LabelledSpec,
    validation_list: Option<&Path>,
    test_list: Option<&Path>,
) -> Result<Split> {
    let find_all = |list: &Path| -> Result<Vec<CaseFiles>> {
        read_list(list)?
            .into_iter()
            .map(|id| {
                dataset
                    .training
                    .iter()
                    .chain(&dataset.test)
                    .find(|c| c.id == id)
                    .cloned()
                    .ok_or_else(|| {
                        VolumeError::dataset(list, format!("case {id:?} is not in the dataset"))
                    })
            })
            .collect()
    };
    let validation = match validation_list {
        Some(l) => find_all(l)?,
        None => Vec::new(),
    };
    let test = match test_list {
        Some(l) => find_all(l)?,
        None => dataset.test.clone(),
    };
    if let Some(list) = validation_list
        && let Some(both) = validation
            .iter()
            .find(|c| test.iter().any(|t| t.id == c.id))
    {
        let test_set = match test_list {
            Some(t) => format!("the test list {}", t.display()),
            None => "the dataset's test cases".into(),
        };
        return Err(VolumeError::dataset(
            list,
            format!(
                "case {:?} is also in {test_set}; a case is validated on or tested on, not both",
                both.id
            ),
        ));
    }
    let held_out = |c: &CaseFiles| validation.iter().chain(&test).any(|v| v.id == c.id);
    let pool: Vec<CaseFiles> = dataset
        .training
        .iter()
        .filter(|c| !held_out(c))
        .cloned()
        .collect();
    for v in &validation {
        if v.label.is_none() {
            return Err(VolumeError::dataset(
                &v.image,
                "validation case has no label",
            ));
        }
    }
    let labelled_ids: Vec<String> = match labelled {
        LabelledSpec::Count(n) => {
            if *n > pool.len() {
                return Err(VolumeError::dataset(
                    &dataset.root,
                    format!(
                        "{n} labelled cases requested but only {} training cases remain after hold-outs",
                        pool.len()
                    ),
                ));
            }
            pool.iter().take(*n).map(|c| c.id.clone()).collect()
        }
        LabelledSpec::Fraction(f) => {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(VolumeError::dataset(
                    &dataset.root,
                    format!("labelled fraction {f} must be in (0, 1]"),
                ));
            }
            let n = ((pool.len() as f64 * f).round() as usize).clamp(1, pool.len().max(1));
            pool.iter().take(n).map(|c| c.id.clone()).collect()
        }
        LabelledSpec::List(list) => {
            let ids = read_list(list)?;
            for id in &ids {
                if !pool.iter().any(|c| &c.id == id) {
                    return Err(VolumeError::dataset(
                        list,
                        format!("labelled case {id:?} is not a training case (or is held out)"),
                    ));
                }
            }
            ids
        }
    };
    if labelled_ids.is_empty() {
        return Err(VolumeError::dataset(
            &dataset.root,
            "no labelled training case",
        ));
    }
    let mut cases = Vec::new();
    for c in pool {
        if labelled_ids.contains(&c.id) {
            cases.push((c, Role::Labelled));
        } else {
            cases.push((c, Role::Unlabelled));
        }
    }
    cases.extend(validation.into_iter().map(|c| (c, Role::Validation)));
    cases.extend(test.into_iter().map(|c| (c, Role::Test)));
    Ok(Split {
        cases,
        declared_labels: dataset.label_names.iter().map(|(v, _)| *v).collect(),
    })
}
