//! The V-Net's trunk in training on the CPU (the encoder and the decoder up
//! to the last stage's output; the heads stay graph nodes of their own) as
//! one node of candle's graph with its own backward pass.
//!
//! Why: candle's backward gives the gradient of every graph node a
//! zero-filled tensor of the node's size and adds the incoming gradient
//! into it, and every graph node stays alive until the whole backward pass
//! ends. Layer by layer, that was a fill and an add over every activation
//! of the network on each step, on one thread. Here the forward runs the
//! same fused layers ([`ops::conv_bn_relu_train`]'s op) without recording
//! them, and the backward walks the layers in reverse: each layer's output
//! gradient goes straight to the layer, each skip connection's two
//! gradients are summed once, and each layer's tensors are freed once its
//! gradients exist. Kernels and sums are those of the layer-by-layer graph
//! (`0 + a + b` there is `a + b` here), so the results are the same to the
//! bit (test `trunk_matches_the_layer_graph`).
//!
//! The parameters enter as one flat tensor, every layer's weight, bias,
//! gamma and beta concatenated in forward order, so the node has two inputs
//! (image, parameters) and candle hands each variable its slice of the
//! gradient. The last layer runs as the node's own forward, so the node's
//! output is that layer's buffer, not a copy.

use super::{Layer, VNet};
use crate::error::Result;
use crate::ops::{self, ConvBnReluTrain};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// One layer's forward as the backward needs it.
struct LayerTape {
    op: ConvBnReluTrain,
    /// The layer's index in forward order (its slice of the parameters).
    index: usize,
    x: Tensor,
    w: Tensor,
    p: Tensor,
    /// The output; `None` for the trunk's last layer, whose output is the
    /// node's (`bwd`'s `res`).
    z: Option<Tensor>,
}

/// What the forward keeps, by the architecture's parts.
struct Tape {
    /// Encoder stages 0-4, decoder stages 5-8.
    stages: Vec<Vec<LayerTape>>,
    downs: Vec<LayerTape>,
    ups: Vec<LayerTape>,
    /// The bottleneck's channel-dropout multipliers.
    bottom_mask: Option<Tensor>,
}

impl Tape {
    fn layers(&self) -> usize {
        self.stages.iter().map(Vec::len).sum::<usize>() + self.downs.len() + self.ups.len()
    }
}

/// The graph node: every layer but the last ran before the node is made;
/// the last runs as its forward.
struct TrunkNode {
    tape: Arc<Mutex<Option<Tape>>>,
}

impl VNet {
    /// The trunk's layers in forward order with their convolutions.
    fn trunk_layers(&self) -> Vec<&Layer> {
        let mut layers = Vec::new();
        for s in 0..4 {
            layers.extend(&self.stages[s].layers);
            layers.push(&self.downs[s]);
        }
        layers.extend(&self.stages[4].layers);
        for u in 0..4 {
            layers.push(&self.ups[u]);
            layers.extend(&self.stages[5 + u].layers);
        }
        layers
    }

    /// The last decoder stage's output for `x` in training mode (batch
    /// statistics, running statistics updated), as one graph node (module
    /// doc); `bottom_mask` is the bottleneck's channel dropout.
    pub(super) fn trunk_train(&self, x: &Tensor, bottom_mask: Option<Tensor>) -> Result<Tensor> {
        let layers = self.trunk_layers();
        let mut pieces = Vec::with_capacity(4 * layers.len());
        let mut sizes = Vec::with_capacity(layers.len());
        for l in &layers {
            let w = l.conv.weight.as_tensor().flatten_all()?;
            sizes.push((w.elem_count(), 3 * l.conv.bias.elem_count()));
            pieces.extend([
                w,
                l.conv.bias.as_tensor().clone(),
                l.gamma.as_tensor().clone(),
                l.beta.as_tensor().clone(),
            ]);
        }
        let theta = Tensor::cat(&pieces, 0)?;
        drop(pieces);
        let flat = theta.detach();
        let mut next = 0;
        let mut offset = 0;
        // Runs the next layer on `h` and moves `h` to its output. Each layer
        // but the last runs here; the last runs as the node's own forward, so
        // its output is the node's without a copy (`h` is then left as is).
        let last = layers.len() - 1;
        let mut run = |h: &mut Tensor| -> Result<LayerTape> {
            let l = layers[next];
            let (nw, np) = sizes[next];
            let w = flat.narrow(0, offset, nw)?.reshape(l.conv.weight.shape())?;
            let p = flat.narrow(0, offset + nw, np)?.reshape((3, np / 3))?;
            let op = ConvBnReluTrain::new(l.layer_conv(), l.eps);
            let x = h.contiguous()?;
            let z = if next == last {
                None
            } else {
                let z = op.forward_detached(&x, &w, &p)?;
                l.update_running_stats(&op.saved()?, &z)?;
                *h = z.clone();
                Some(z)
            };
            let tape = LayerTape {
                op,
                index: next,
                x,
                w,
                p,
                z,
            };
            next += 1;
            offset += nw + np;
            Ok(tape)
        };
        let mut stages = Vec::with_capacity(9);
        let mut downs = Vec::with_capacity(4);
        let mut ups = Vec::with_capacity(4);
        let mut skips = Vec::with_capacity(4);
        let mut h = x.detach();
        for s in 0..4 {
            let stage = (0..self.stages[s].layers.len()).map(|_| run(&mut h));
            stages.push(stage.collect::<Result<Vec<_>>>()?);
            skips.push(h.clone());
            downs.push(run(&mut h)?);
        }
        let stage = (0..self.stages[4].layers.len()).map(|_| run(&mut h));
        stages.push(stage.collect::<Result<Vec<_>>>()?);
        if let Some(mask) = &bottom_mask {
            h = ops::channel_dropout_with_mask(&h, mask)?;
        }
        for u in 0..4 {
            ups.push(run(&mut h)?);
            h = ops::add_detached(&h, &skips[3 - u])?;
            let stage = (0..self.stages[5 + u].layers.len()).map(|_| run(&mut h));
            stages.push(stage.collect::<Result<Vec<_>>>()?);
        }
        drop(skips);
        drop(h);
        let tape = Arc::new(Mutex::new(Some(Tape {
            stages,
            downs,
            ups,
            bottom_mask,
        })));
        let out = x.apply_op2(&theta, TrunkNode { tape: tape.clone() })?;
        // The last layer's running statistics, now that it has run.
        let guard = tape.lock().expect("trunk tape");
        let t = guard.as_ref().map(last_layer).transpose()?;
        let t = t.ok_or_else(|| candle_core::Error::Msg("V-Net trunk: no tape".into()))?;
        layers[last].update_running_stats(&t.op.saved()?, &out)?;
        drop(guard);
        Ok(out)
    }
}

/// The trunk's last layer in the tape.
fn last_layer(tape: &Tape) -> candle_core::Result<&LayerTape> {
    tape.stages
        .last()
        .and_then(|s| s.last())
        .ok_or_else(|| candle_core::Error::Msg("V-Net trunk: no last layer".into()))
}

impl CustomOp2 for TrunkNode {
    fn name(&self) -> &'static str {
        "dtml-vnet-trunk"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let guard = self.tape.lock().expect("trunk tape");
        let tape = guard
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("V-Net trunk: forward after backward".into()))?;
        let t = last_layer(tape)?;
        t.op.forward_storage(&t.x, &t.w, &t.p)
    }

    fn bwd(
        &self,
        x: &Tensor,
        theta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let tape = self.tape.lock().expect("trunk tape").take().ok_or_else(|| {
            candle_core::Error::Msg(
                "V-Net trunk: a second backward pass over one forward pass (it frees its tensors as it goes)".into(),
            )
        })?;
        let mut param_grads: Vec<Option<(Tensor, Tensor)>> = vec![None; tape.layers()];
        let Tape {
            mut stages,
            mut downs,
            mut ups,
            bottom_mask,
        } = tape;
        // One layer back: its parameters' gradients kept, its input's
        // returned (when `want_x`).
        let mut back =
            |t: LayerTape, dz: Tensor, want_x: bool| -> candle_core::Result<Option<Tensor>> {
                let z = t.z.as_ref().unwrap_or(res);
                let (dx, dw, dp) = t.op.grads(&t.x, &t.w, &t.p, z, &dz, [want_x, true, true])?;
                param_grads[t.index] = Some((
                    dw.expect("asked for").flatten_all()?,
                    dp.expect("asked for").flatten_all()?,
                ));
                Ok(dx)
            };
        let required = |g: Option<Tensor>| g.expect("asked for");
        // A stage back, last layer first: its input's gradient (when
        // `want_x`; the stage's inner layers always pass theirs on).
        let back_stage = |stage: Vec<LayerTape>,
                          mut g: Tensor,
                          want_x: bool,
                          back: &mut dyn FnMut(
            LayerTape,
            Tensor,
            bool,
        ) -> candle_core::Result<Option<Tensor>>|
         -> candle_core::Result<Option<Tensor>> {
            for (i, t) in stage.into_iter().enumerate().rev() {
                match back(t, g, i > 0 || want_x)? {
                    Some(d) => g = d,
                    None => return Ok(None),
                }
            }
            Ok(Some(g))
        };
        let mut g = grad.contiguous()?;
        let mut skip_grads: Vec<Option<Tensor>> = vec![None; 4];
        let decoder = stages.split_off(5);
        for (u, stage) in decoder.into_iter().enumerate().rev() {
            g = required(back_stage(stage, g, true, &mut back)?);
            skip_grads[3 - u] = Some(g.clone());
            g = required(back(ups.pop().expect("four ups"), g, true)?);
        }
        if let Some(mask) = &bottom_mask {
            g = ops::channel_dropout_with_mask(&g, mask)?;
        }
        let mut dx = None;
        for s in (0..5).rev() {
            let stage = stages.pop().expect("five encoder stages");
            if s < 4 {
                g = required(back(downs.pop().expect("four downs"), g, true)?);
                let skip = skip_grads[s].take().expect("the decoder's gradient");
                g = ops::add_detached(&g, &skip)?;
            }
            match back_stage(stage, g, s > 0 || x.track_op(), &mut back)? {
                Some(d) if s > 0 => g = d,
                d => {
                    dx = d;
                    break;
                }
            }
        }
        let mut pieces = Vec::with_capacity(2 * param_grads.len());
        for pg in param_grads {
            let (dw, dp) = pg.ok_or_else(|| {
                candle_core::Error::Msg("V-Net trunk: a layer got no gradient".into())
            })?;
            pieces.extend([dw, dp]);
        }
        let dtheta = theta
            .track_op()
            .then(|| Tensor::cat(&pieces, 0))
            .transpose()?;
        // `dx` is `None` unless `x` tracks a gradient (the first layer was
        // asked for it only then).
        Ok((dx, dtheta))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Dropout, Pass, VNet, VNetConfig};
    use candle_core::{DType, Device, Tensor, Var};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(shape: &[usize], dtype: DType, rng: &mut ChaCha8Rng) -> Tensor {
        let v: Vec<f64> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random::<f64>() * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The trunk node gives bit for bit what the graph of layers gives: both
    /// outputs, the gradient of every parameter and of the input, and the
    /// running statistics, with and without channel dropout, in f32 and f64.
    #[test]
    fn trunk_matches_the_layer_graph() {
        for dtype in [DType::F32, DType::F64] {
            for dropout in [0.0, 0.5] {
                let config = VNetConfig {
                    width: 2,
                    dropout,
                    ..VNetConfig::default()
                };
                let nets =
                    [0, 1].map(|_| VNet::new(config.clone(), 5, dtype, &Device::Cpu).unwrap());
                let mut rng = ChaCha8Rng::seed_from_u64(9);
                let x = Var::from_tensor(&random(&[2, 1, 16, 16, 32], dtype, &mut rng)).unwrap();
                let r_sdm = random(&[2, 1, 16, 16, 32], dtype, &mut rng);
                let r_seg = random(&[2, 1, 16, 16, 32], dtype, &mut rng);
                let mut masks = Vec::new();
                for c in [32, 2] {
                    let keep: Vec<f64> = (0..2 * c)
                        .map(|i| {
                            if dropout > 0.0 && i % 3 == 0 {
                                0.0
                            } else {
                                1.0 / (1.0 - dropout)
                            }
                        })
                        .collect();
                    masks.push(
                        Tensor::from_vec(keep, (2, c), &Device::Cpu)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap(),
                    );
                }
                let pass = Pass {
                    train: true,
                    track: true,
                };
                let drop = |_: ()| {
                    if dropout > 0.0 {
                        Dropout::Masks(&masks)
                    } else {
                        Dropout::Off
                    }
                };
                let trunk = nets[0].run(x.as_tensor(), pass, drop(())).unwrap();
                let layers = nets[1].run_layers(x.as_tensor(), pass, drop(())).unwrap();
                let what = format!("{dtype:?}, dropout {dropout}");
                assert_eq!(values(&trunk.sdm), values(&layers.sdm), "{what}: sdm");
                assert_eq!(
                    values(&trunk.seg_logits),
                    values(&layers.seg_logits),
                    "{what}: seg"
                );
                let loss = |o: &super::super::VNetOutput| {
                    ((&o.sdm * &r_sdm).unwrap().sum_all().unwrap()
                        + (&o.seg_logits * &r_seg).unwrap().sum_all().unwrap())
                    .unwrap()
                };
                let (ga, gb) = (
                    loss(&trunk).backward().unwrap(),
                    loss(&layers).backward().unwrap(),
                );
                let (da, db) = (
                    ga.get(x.as_tensor()).unwrap(),
                    gb.get(x.as_tensor()).unwrap(),
                );
                assert_eq!(values(da), values(db), "{what}: input gradient");
                for ((name, a), (_, b)) in nets[0].vars.iter().zip(&nets[1].vars) {
                    if name.contains("running_") {
                        assert_eq!(
                            values(a.as_tensor()),
                            values(b.as_tensor()),
                            "{what}: {name}"
                        );
                        continue;
                    }
                    let (a, b) = (ga.get(a.as_tensor()), gb.get(b.as_tensor()));
                    assert!(a.is_some() && b.is_some(), "{what}: {name} has a gradient");
                    assert_eq!(values(a.unwrap()), values(b.unwrap()), "{what}: d {name}");
                }
                // The node frees its tensors as its backward runs: a second
                // backward pass is an error, not a wrong gradient.
                let e = loss(&trunk).backward().unwrap_err();
                assert!(e.to_string().contains("second backward"), "{e}");
            }
        }
    }
}
