//! The optimisers, with PyTorch's update rules: SGD with momentum and
//! weight decay (`d = g + wd * w; buf = momentum * buf + d` (buf = d on the
//! first step); `w -= lr * buf`), which only ever sees trained parameters,
//! so BatchNorm's running statistics get neither momentum nor decay; and
//! Adam for SASSNet's discriminator.

use crate::error::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// Replaces the gradient of every parameter of `params` in `grads` by its
/// mean over the ranks of `group`, all in one flat buffer in parameter
/// order (a single all-reduce per step). Nothing to do for a group of one.
pub fn average_gradients(
    params: &[(String, Var)],
    grads: &mut GradStore,
    group: &dyn crate::collective::Collective,
) -> Result<()> {
    if group.size() == 1 {
        return Ok(());
    }
    let mut flat: Vec<f32> = Vec::new();
    let mut present = Vec::with_capacity(params.len());
    for (_, var) in params {
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
    for ((_, var), has) in params.iter().zip(present) {
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

    /// Replaces every gradient of its parameters in `grads` by its mean
    /// over the ranks of `group` ([`average_gradients`]).
    pub fn average_gradients(
        &self,
        grads: &mut GradStore,
        group: &dyn crate::collective::Collective,
    ) -> Result<()> {
        average_gradients(&self.params, grads, group)
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

    /// Forgets the momentum, as a new PyTorch optimizer would start (BCP's
    /// self-training stage).
    pub fn clear_momentum(&mut self) {
        self.buffers.iter_mut().for_each(|b| *b = None);
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

/// Adam with PyTorch's update rule and no weight decay (how SASSNet's
/// discriminator is trained): `m = b1 m + (1 - b1) g`, `v = b2 v + (1 -
/// b2) g^2`, `w -= lr m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps)`.
pub struct Adam {
    params: Vec<(String, Var)>,
    /// First and second moments per parameter (`None` before its first
    /// gradient).
    moments: Vec<Option<(Tensor, Tensor)>>,
    /// Updates so far (PyTorch's per-parameter `step`; every parameter of
    /// the discriminator gets a gradient each time).
    steps: u64,
    pub betas: (f64, f64),
    pub eps: f64,
}

impl Adam {
    pub fn new(params: Vec<(String, Var)>, betas: (f64, f64), eps: f64) -> Adam {
        let moments = vec![None; params.len()];
        Adam {
            params,
            moments,
            steps: 0,
            betas,
            eps,
        }
    }

    /// Replaces every gradient of its parameters in `grads` by its mean
    /// over the ranks of `group` ([`average_gradients`]).
    pub fn average_gradients(
        &self,
        grads: &mut GradStore,
        group: &dyn crate::collective::Collective,
    ) -> Result<()> {
        average_gradients(&self.params, grads, group)
    }

    /// One update with learning rate `lr`; parameters without a gradient
    /// are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let (b1, b2) = self.betas;
        let t = self.steps as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for ((_, var), moments) in self.params.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let (m0, v0) = match moments.take() {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m0 * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((v0 * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((&v / c2)?.sqrt()? + self.eps)?;
            let update = ((&m / &denom)? * (lr / c1))?;
            var.set(&(var.as_tensor().detach() - update)?)?;
            *moments = Some((m, v));
        }
        Ok(())
    }

    /// The moments by `"{name}.m"` / `"{name}.v"` and the step count under
    /// `"steps"`, on the CPU.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for ((name, _), moments) in self.params.iter().zip(&self.moments) {
            if let Some((m, v)) = moments {
                out.insert(format!("{name}.m"), m.to_device(&Device::Cpu)?);
                out.insert(format!("{name}.v"), v.to_device(&Device::Cpu)?);
            }
        }
        out.insert(
            "steps".into(),
            Tensor::new(&[self.steps as f64], &Device::Cpu)?,
        );
        Ok(out)
    }

    /// Restores what [`Adam::state`] saved.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let bad = |m: String| Err(TrainError::Other(format!("Adam state: {m}")));
        let steps = match state.get("steps") {
            Some(t) => t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?[0],
            None => return bad("no step count".into()),
        };
        if !(steps >= 0.0 && steps.fract() == 0.0) {
            return bad(format!("step count {steps}"));
        }
        let known: std::collections::HashSet<String> = self
            .params
            .iter()
            .flat_map(|(n, _)| [format!("{n}.m"), format!("{n}.v")])
            .chain(["steps".to_string()])
            .collect();
        if let Some(extra) = state.keys().find(|k| !known.contains(*k)) {
            return bad(format!("a moment of unknown parameter {extra}"));
        }
        for ((name, var), moments) in self.params.iter().zip(self.moments.iter_mut()) {
            *moments = match (
                state.get(&format!("{name}.m")),
                state.get(&format!("{name}.v")),
            ) {
                (Some(m), Some(v)) if m.dims() == var.dims() && v.dims() == var.dims() => Some((
                    m.to_dtype(var.dtype())?.to_device(var.device())?,
                    v.to_dtype(var.dtype())?.to_device(var.device())?,
                )),
                (None, None) => None,
                _ => return bad(format!("moments of {name} missing or of the wrong shape")),
            };
        }
        self.steps = steps as u64;
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

    /// Adam against its rule computed by hand in f64 (the rule PyTorch's
    /// `torch.optim.Adam` documents; the SASSNet lockstep test checks it
    /// against PyTorch itself), and its state round trip.
    #[test]
    fn adam_matches_its_rule_by_hand() {
        let w = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![("w".into(), w.clone())], (0.9, 0.99), 1e-8);
        let (mut want_w, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for t in 1..=4 {
            let loss = (w.as_tensor().sqr().unwrap() * 1.5)
                .unwrap()
                .sum_all()
                .unwrap();
            adam.step(&loss.backward().unwrap(), 1e-3).unwrap();
            let g = 3.0 * want_w;
            m = 0.9 * m + 0.1 * g;
            v = 0.99 * v + 0.01 * g * g;
            let (c1, c2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.99f64.powi(t));
            want_w -= 1e-3 * (m / c1) / ((v / c2).sqrt() + 1e-8);
            let got = w.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!((got - want_w).abs() < 1e-15, "step {t}: {got} vs {want_w}");
        }
        let state = adam.state().unwrap();
        let mut again = Adam::new(vec![("w".into(), w.clone())], (0.9, 0.99), 1e-8);
        again.load_state(&state).unwrap();
        assert_eq!(again.steps, 4);
        let mut bad = state.clone();
        bad.remove("w.v");
        assert!(again.load_state(&bad).is_err());
    }
}
