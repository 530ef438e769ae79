//! SGD with momentum and weight decay, with PyTorch's update rule
//! (`d = g + wd * w; buf = momentum * buf + d` (buf = d on the first step);
//! `w -= lr * buf`). It only ever sees trained parameters, so BatchNorm's
//! running statistics get neither momentum nor decay.

use crate::error::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// SGD state over a named set of variables.
pub struct Sgd {
    params: Vec<(String, Var)>,
    buffers: Vec<Option<Tensor>>,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    /// An optimizer over `params` (names must be unique: they key the
    /// saved momentum buffers).
    pub fn new(params: Vec<(String, Var)>, momentum: f64, weight_decay: f64) -> Sgd {
        let buffers = vec![None; params.len()];
        Sgd {
            params,
            buffers,
            momentum,
            weight_decay,
        }
    }

    /// Replaces every gradient in `grads` by its mean over the ranks of
    /// `group`, all in one flat buffer in parameter order (a single
    /// all-reduce per step). Nothing to do for a group of one.
    pub fn average_gradients(
        &self,
        grads: &mut GradStore,
        group: &dyn crate::collective::Collective,
    ) -> Result<()> {
        if group.size() == 1 {
            return Ok(());
        }
        let mut flat: Vec<f32> = Vec::new();
        let mut present = Vec::with_capacity(self.params.len());
        for (_, var) in &self.params {
            let t = var.as_tensor();
            match grads.get(t) {
                Some(g) => {
                    flat.extend(
                        g.detach()
                            .to_dtype(candle_core::DType::F32)?
                            .flatten_all()?
                            .to_vec1::<f32>()?,
                    );
                    present.push(true);
                }
                // Every rank runs the same graph, so a parameter without a
                // gradient has none anywhere; its slot keeps the layout.
                None => {
                    flat.extend(std::iter::repeat_n(0.0, t.elem_count()));
                    present.push(false);
                }
            }
        }
        group.all_reduce_mean(&mut flat)?;
        let mut at = 0;
        for ((_, var), has) in self.params.iter().zip(present) {
            let t = var.as_tensor();
            let n = t.elem_count();
            if has {
                let g = Tensor::from_slice(&flat[at..at + n], t.shape(), t.device())?
                    .to_dtype(t.dtype())?;
                grads.insert(t, g);
            }
            at += n;
        }
        Ok(())
    }

    /// One update with learning rate `lr`. Parameters without a gradient
    /// are left alone, as PyTorch does.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for ((_, var), buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients computed from variables carry candle's op graph;
            // detached, the momentum buffer does not keep every past
            // iteration's graph (and its activations) alive.
            let mut d = g.detach();
            if self.weight_decay != 0.0 {
                d = (d + (var.as_tensor().detach() * self.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                let next = match buf.take() {
                    Some(b) => ((b * self.momentum)? + d)?,
                    None => d,
                };
                d = next.clone();
                *buf = Some(next);
            }
            var.set(&(var.as_tensor().detach() - (d * lr)?)?)?;
        }
        Ok(())
    }

    /// Momentum buffers by parameter name, on the CPU.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for ((name, _), buf) in self.params.iter().zip(&self.buffers) {
            if let Some(b) = buf {
                out.insert(name.clone(), b.to_device(&Device::Cpu)?);
            }
        }
        Ok(out)
    }

    /// Restores momentum buffers saved by [`Sgd::state`].
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let known: std::collections::HashSet<&str> =
            self.params.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(extra) = state.keys().find(|k| !known.contains(k.as_str())) {
            return Err(TrainError::Other(format!(
                "optimizer state has a buffer for unknown parameter {extra}"
            )));
        }
        for ((name, var), buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            *buf = match state.get(name) {
                Some(t) => {
                    if t.dims() != var.dims() {
                        return Err(TrainError::Other(format!(
                            "optimizer buffer {name} has shape {:?}, parameter {:?}",
                            t.dims(),
                            var.dims()
                        )));
                    }
                    Some(t.to_dtype(var.dtype())?.to_device(var.device())?)
                }
                None => None,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn matches_pytorch_sgd_rule_by_hand() {
        // w = 1, loss = 1.5 w^2  =>  g = 3 w, a gradient that depends on
        // the variable (so candle's graph would reach it).
        let w = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let mut sgd = Sgd::new(vec![("w".into(), w.clone())], 0.9, 0.1);
        let mut want_w = 1.0f64;
        let mut want_buf: Option<f64> = None;
        for _ in 0..3 {
            let loss = (w.as_tensor().sqr().unwrap() * 1.5)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            sgd.step(&grads, 0.01).unwrap();
            let d = 3.0 * want_w + 0.1 * want_w;
            let b = want_buf.map_or(d, |b| 0.9 * b + d);
            want_buf = Some(b);
            want_w -= 0.01 * b;
            let got = w.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!((got - want_w).abs() < 1e-15, "{got} vs {want_w}");
        }
        let state = sgd.state().unwrap();
        assert!(
            !state["w"].track_op(),
            "momentum buffers must not hold the autograd graph of past steps"
        );
        let mut again = Sgd::new(vec![("w".into(), w.clone())], 0.9, 0.1);
        again.load_state(&state).unwrap();
        assert_eq!(
            again.state().unwrap()["w"].to_vec1::<f64>().unwrap(),
            vec![want_buf.unwrap()]
        );
        let bad = HashMap::from([(
            "v".to_string(),
            Tensor::zeros(1, DType::F64, &Device::Cpu).unwrap(),
        )]);
        assert!(again.load_state(&bad).is_err());
    }
}
