//! A V-Net's weights on disk: the state dict in the PyTorch layout of the
//! UA-MT / DTC / DTML code (so `.pth` checkpoints load and ours load in
//! PyTorch), reading `.pth` and `.safetensors` files, checked loading.

use super::*;

impl VNet {
    /// A snapshot of the state dict in the reference layout (spatial kernel
    /// axes reversed), including `num_batches_tracked`, as PyTorch saves it.
    /// The tensors are copies: later training steps do not change them.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (k, v) in &self.vars {
            out.insert(
                k.clone(),
                // A copy: the layout change alone may share the variable's
                // storage, which training updates in place.
                to_reference_layout(v.as_tensor())?
                    .to_device(&Device::Cpu)?
                    .copy()?,
            );
            if k.ends_with(".running_mean") {
                let prefix = k.trim_end_matches(".running_mean");
                let n = Tensor::new(self.batches_tracked() as i64, &Device::Cpu)?;
                out.insert(format!("{prefix}.num_batches_tracked"), n);
            }
        }
        Ok(out)
    }

    /// Sets every parameter and statistic from a state dict in the
    /// reference layout; every expected tensor must be there with its shape.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        let weights_err = |reason: String| ModelError::Weights {
            path: source.to_path_buf(),
            reason,
        };
        let mut missing = Vec::new();
        for (k, var) in &self.vars {
            let Some(t) = tensors.get(k) else {
                missing.push(k.clone());
                continue;
            };
            let t = from_reference_layout(t)?;
            if t.dims() != var.dims() {
                return Err(weights_err(format!(
                    "{k} has shape {:?} but this V-Net (width {}, {} input channels) needs {:?} (wrong width or not a V-Net of this family?)",
                    to_reference_dims(t.dims()),
                    self.config.width,
                    self.config.in_channels,
                    to_reference_dims(var.dims())
                )));
            }
            // NaN or inf weights give NaN everywhere and an empty mask, a
            // silent wrong answer: refuse them at load. (A sum of finite
            // weights is finite in f64; any NaN or inf makes it non-finite.)
            if t.dtype().is_float() {
                let t64 = t.to_dtype(DType::F64)?;
                if !t64.sum_all()?.to_scalar::<f64>()?.is_finite() {
                    let bad = t64
                        .flatten_all()?
                        .to_vec1::<f64>()?
                        .iter()
                        .filter(|v| !v.is_finite())
                        .count();
                    return Err(weights_err(format!(
                        "{k} holds {bad} NaN or infinite value(s): the weights are corrupt or come from a diverged run"
                    )));
                }
            }
            var.set(&t.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        }
        if !missing.is_empty() {
            let shown: Vec<_> = missing.iter().take(5).cloned().collect();
            return Err(weights_err(format!(
                "{} expected tensors are missing, e.g. {shown:?} (is this a V-Net state dict of the UA-MT/DTC/DTML family?)",
                missing.len()
            )));
        }
        let unexpected: Vec<_> = tensors
            .keys()
            .filter(|k| !self.vars.contains_key(*k) && !k.ends_with("num_batches_tracked"))
            .take(5)
            .cloned()
            .collect();
        if !unexpected.is_empty() {
            return Err(weights_err(format!(
                "unexpected tensors {unexpected:?}: not a V-Net of this configuration"
            )));
        }
        let tracked = tensors
            .iter()
            .find(|(k, _)| k.ends_with("num_batches_tracked"))
            .and_then(|(_, t)| t.to_dtype(DType::F64).ok()?.to_scalar::<f64>().ok())
            .unwrap_or(0.0);
        self.batches_tracked
            .store(tracked as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Loads weights from a `.pth`/`.pt` (PyTorch pickle, optionally under a
    /// `state_dict` / `model` key, `module.` prefixes stripped) or a
    /// `.safetensors` file, both in the reference layout.
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        let tensors = read_weight_file(path)?;
        self.load_state_dict(&tensors, path)
    }

    /// Writes the state dict as safetensors (reference layout), atomically.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let sd = self.state_dict()?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        candle_core::safetensors::save(&sd, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Reads a weight file into name -> tensor (reference layout).
pub fn read_weight_file(path: &Path) -> Result<HashMap<String, Tensor>> {
    let err = |reason: String| ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(err("no such file".into()));
    }
    let name = path.to_string_lossy().to_ascii_lowercase();
    let list: Vec<(String, Tensor)> = if name.ends_with(".safetensors") {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| err(format!("not a readable safetensors file: {e}")))?
            .into_iter()
            .collect()
    } else {
        let mut found = None;
        // Why the first (top-level) attempt failed is the reason to give.
        let mut reason = None;
        for key in [None, Some("state_dict"), Some("model"), Some("net")] {
            match candle_core::pickle::read_all_with_key(path, key) {
                Ok(v) if !v.is_empty() => {
                    found = Some(v);
                    break;
                }
                Ok(_) => {
                    reason.get_or_insert_with(|| "it holds no tensors".to_string());
                }
                Err(e) => {
                    reason.get_or_insert_with(|| {
                        let text = e.to_string();
                        if text.contains("zip") || text.contains("Zip") {
                            format!("not a PyTorch zip archive ({text})")
                        } else {
                            text
                        }
                    });
                }
            }
        }
        found.ok_or_else(|| {
            err(format!(
                "not a readable PyTorch state dict (.pth) file: {} (also looked under the keys state_dict, model, net)",
                reason.unwrap_or_default()
            ))
        })?
    };
    Ok(list
        .into_iter()
        .map(|(k, t)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                t,
            )
        })
        .collect())
}

pub(super) fn to_reference_dims(d: &[usize]) -> Vec<usize> {
    if d.len() == 5 {
        vec![d[0], d[1], d[4], d[3], d[2]]
    } else {
        d.to_vec()
    }
}

/// Kernels `(a, b, kz, ky, kx)` <-> `(a, b, kx, ky, kz)`: reversing the
/// spatial axes is its own inverse. May share storage with `t` (1-D
/// tensors, 1x1x1 kernels).
pub(super) fn to_reference_layout(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.rank() == 5 {
        t.permute((0, 1, 4, 3, 2))?.contiguous()
    } else {
        Ok(t.clone())
    }
}

pub(super) fn from_reference_layout(t: &Tensor) -> candle_core::Result<Tensor> {
    to_reference_layout(t)
}
