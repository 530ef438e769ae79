//! The fused training-mode `relu(batch_norm(x + bias))` op: gradients
//! against central finite differences in f64, values, statistics and
//! gradients against the candle-composed reference and candle-nn's
//! BatchNorm (running statistics semantics).

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use dtml_model::ops;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], lo: f64, hi: f64, dtype: DType, rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| lo + (hi - lo) * rng.random::<f64>())
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

struct Inputs {
    x: Var,
    bias: Var,
    gamma: Var,
    beta: Var,
    r: Tensor,
}

fn inputs(shape: &[usize], dtype: DType, seed: u64) -> Inputs {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = shape[1];
    Inputs {
        // An offset larger than the spread tests the shifted statistics.
        x: Var::from_tensor(&random(shape, 2.0, 4.0, dtype, &mut rng)).unwrap(),
        bias: Var::from_tensor(&random(&[c], -0.5, 0.5, dtype, &mut rng)).unwrap(),
        gamma: Var::from_tensor(&random(&[c], 0.5, 1.5, dtype, &mut rng)).unwrap(),
        beta: Var::from_tensor(&random(&[c], -0.3, 0.3, dtype, &mut rng)).unwrap(),
        r: random(shape, -1.0, 1.0, dtype, &mut rng),
    }
}

type Op =
    fn(&Tensor, &Tensor, &Tensor, &Tensor, f64) -> candle_core::Result<(Tensor, Tensor, Tensor)>;

fn loss(op: Op, i: &Inputs) -> Tensor {
    let (y, _, _) = op(
        i.x.as_tensor(),
        i.bias.as_tensor(),
        i.gamma.as_tensor(),
        i.beta.as_tensor(),
        1e-5,
    )
    .unwrap();
    (y * &i.r).unwrap().sum_all().unwrap()
}

fn grads(op: Op, i: &Inputs) -> Vec<Tensor> {
    let g = loss(op, i).backward().unwrap();
    [&i.x, &i.bias, &i.gamma, &i.beta]
        .iter()
        .map(|v| g.get(v.as_tensor()).unwrap().clone())
        .collect()
}

#[test]
fn gradients_match_finite_differences_f64() {
    let i = inputs(&[2, 3, 2, 3, 4], DType::F64, 11);
    let analytic = grads(ops::bias_bn_relu_train, &i);
    let h = 1e-6;
    for (k, var) in [&i.x, &i.bias, &i.gamma, &i.beta].iter().enumerate() {
        let base = to_vec(var.as_tensor());
        let mut numeric = vec![0f64; base.len()];
        for j in 0..base.len() {
            let eval = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                loss(ops::bias_bn_relu_train, &i)
                    .to_scalar::<f64>()
                    .unwrap()
            };
            numeric[j] = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
        let got = to_vec(&analytic[k]);
        for (j, (a, b)) in got.iter().zip(&numeric).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "input {k}[{j}]: analytic {a} vs numeric {b}"
            );
        }
    }
}

#[test]
fn matches_the_composed_reference_and_candle_nn() {
    for (shape, dtype, tol) in [
        (vec![2usize, 4, 3, 5, 7], DType::F64, 1e-10),
        (vec![4, 8, 6, 12, 12], DType::F32, 2e-4),
        (vec![1, 5, 3, 4, 9], DType::F32, 2e-4),
        (vec![1, 64, 3, 1, 2], DType::F32, 2e-4),
    ] {
        let i = inputs(&shape, dtype, 5);
        let args = (
            i.x.as_tensor(),
            i.bias.as_tensor(),
            i.gamma.as_tensor(),
            i.beta.as_tensor(),
        );
        let (y, mean, var) = ops::bias_bn_relu_train(args.0, args.1, args.2, args.3, 1e-5).unwrap();
        let (ry, rmean, rvar) =
            ops::reference::bias_bn_relu_train(args.0, args.1, args.2, args.3, 1e-5).unwrap();
        assert!(max_err(&y, &ry) < tol, "{shape:?} y");
        assert!(max_err(&mean, &rmean) < tol * 10.0, "{shape:?} mean");
        assert!(max_err(&var, &rvar) < tol, "{shape:?} var");
        let got = grads(ops::bias_bn_relu_train, &i);
        let want = grads(ops::reference::bias_bn_relu_train, &i);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            let scale = to_vec(b).iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(
                max_err(a, b) < tol * scale * 10.0,
                "{shape:?} gradient {k}: {}",
                max_err(a, b)
            );
        }

        // candle-nn's BatchNorm in training mode: same output, and the
        // running statistics it keeps are what our mean / var give.
        let c = shape[1];
        let bn = candle_nn::BatchNorm::new_with_momentum(
            c,
            Tensor::zeros(c, dtype, &Device::Cpu).unwrap(),
            Tensor::ones(c, dtype, &Device::Cpu).unwrap(),
            i.gamma.as_tensor().clone(),
            i.beta.as_tensor().clone(),
            1e-5,
            0.1,
        )
        .unwrap();
        let z =
            i.x.as_tensor()
                .broadcast_add(&i.bias.as_tensor().reshape((1, c, 1, 1, 1)).unwrap())
                .unwrap();
        let ny = bn.forward_t(&z, true).unwrap().relu().unwrap();
        assert!(max_err(&y, &ny) < tol, "{shape:?} vs candle-nn");
        let gn = (&ny * &i.r).unwrap().sum_all().unwrap().backward().unwrap();
        for (k, v) in [&i.x, &i.bias, &i.gamma, &i.beta].iter().enumerate() {
            let gx = gn.get(v.as_tensor()).unwrap();
            let scale = to_vec(gx).iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(
                max_err(gx, &got[k]) < tol * scale * 10.0,
                "{shape:?} gradient {k} vs candle-nn"
            );
        }
        let want_rm = (mean.clone() * 0.1).unwrap();
        let want_rv = ((var.clone() * 0.1).unwrap() + 0.9).unwrap();
        assert!(
            max_err(bn.running_mean(), &want_rm) < tol,
            "{shape:?} running mean"
        );
        assert!(
            max_err(bn.running_var(), &want_rv) < tol,
            "{shape:?} running var"
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    let i = inputs(&[2, 3, 2, 2, 2], DType::F32, 1);
    let short = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    assert!(
        ops::bias_bn_relu_train(
            i.x.as_tensor(),
            &short,
            i.gamma.as_tensor(),
            i.beta.as_tensor(),
            1e-5
        )
        .is_err()
    );
    let f64b = i.bias.as_tensor().to_dtype(DType::F64).unwrap();
    assert!(
        ops::bias_bn_relu_train(
            i.x.as_tensor(),
            &f64b,
            i.gamma.as_tensor(),
            i.beta.as_tensor(),
            1e-5
        )
        .is_err()
    );
    let flat = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    assert!(
        ops::bias_bn_relu_train(
            &flat,
            i.bias.as_tensor(),
            i.gamma.as_tensor(),
            i.beta.as_tensor(),
            1e-5
        )
        .is_err()
    );
}

/// The fused layer op (`conv_bn_relu_train`) gives bit for bit what the
/// two ops it fuses give, for each of its convolutions (a 3x3x3 one that
/// keeps its output for the backward, a one-channel 3x3x3 one and the two
/// stride-2 ones, which recompute it): output, batch statistics and the
/// gradients of the input, the kernel and the three per-channel
/// parameters, in f32 and f64, also when only some inputs track gradients,
/// and again from a second backward pass over the same graph.
#[test]
fn fused_conv_layer_equals_conv_then_batch_norm() {
    use ops::LayerConv;
    let cubic = LayerConv::Cubic { padding: 1 };
    // (conv, input channels, input size, kernel shape, output channels)
    let cases = [
        (cubic, 3, [4, 6, 7], [5, 3, 3, 3, 3], 5),
        (cubic, 1, [4, 6, 7], [5, 1, 3, 3, 3], 5),
        (LayerConv::Down, 3, [4, 6, 8], [5, 3, 2, 2, 2], 5),
        (LayerConv::Up, 3, [2, 3, 4], [3, 5, 2, 2, 2], 5),
    ];
    for (conv, cin, size, wshape, cout) in cases {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = ChaCha8Rng::seed_from_u64(31);
            let n = 2;
            let x = Var::from_tensor(&random(
                &[n, cin, size[0], size[1], size[2]],
                -1.0,
                1.0,
                dtype,
                &mut rng,
            ))
            .unwrap();
            let w = Var::from_tensor(&random(&wshape, -0.3, 0.3, dtype, &mut rng)).unwrap();
            let bias = Var::from_tensor(&random(&[cout], -0.5, 0.5, dtype, &mut rng)).unwrap();
            let gamma = Var::from_tensor(&random(&[cout], 0.5, 1.5, dtype, &mut rng)).unwrap();
            let beta = Var::from_tensor(&random(&[cout], -0.3, 0.3, dtype, &mut rng)).unwrap();
            for track_x in [true, false] {
                let what = format!("{conv:?}, {cin} input channels, {dtype:?}");
                let xt = if track_x {
                    x.as_tensor().clone()
                } else {
                    x.as_tensor().detach()
                };
                let (yf, mf, vf) = ops::conv_bn_relu_train(
                    conv,
                    &xt,
                    w.as_tensor(),
                    bias.as_tensor(),
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    1e-5,
                )
                .unwrap();
                let conv_out = ops::layer_conv(conv, &xt, w.as_tensor()).unwrap();
                let (ys, ms, vs) = ops::bias_bn_relu_train(
                    &conv_out,
                    bias.as_tensor(),
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    1e-5,
                )
                .unwrap();
                assert_eq!(to_vec(&yf), to_vec(&ys), "{what}: output");
                assert_eq!(to_vec(&mf), to_vec(&ms), "{what}: mean");
                assert_eq!(to_vec(&vf), to_vec(&vs), "{what}: variance");
                let r = random(yf.dims(), -1.0, 1.0, dtype, &mut rng);
                let lf = (&yf * &r).unwrap().sum_all().unwrap();
                let gs = (&ys * &r).unwrap().sum_all().unwrap().backward().unwrap();
                for pass in ["first", "second"] {
                    let gf = lf.backward().unwrap();
                    for (v, name) in [
                        (&x, "x"),
                        (&w, "w"),
                        (&bias, "bias"),
                        (&gamma, "gamma"),
                        (&beta, "beta"),
                    ] {
                        let (a, b) = (gf.get(v.as_tensor()), gs.get(v.as_tensor()));
                        assert_eq!(a.is_some(), b.is_some(), "{what}: {name} tracked");
                        if let (Some(a), Some(b)) = (a, b) {
                            assert_eq!(to_vec(a), to_vec(b), "{what}: d{name}, {pass} backward");
                        }
                    }
                    assert_eq!(gf.get(x.as_tensor()).is_some(), track_x);
                }
            }
        }
    }
    // Bad shapes are errors naming the op.
    let x = Tensor::zeros((1, 2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((4, 2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let c3 = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let e = ops::conv3d_bn_relu_train(&x, &w, 1, &c3, &c3, &c3, 1e-5).unwrap_err();
    assert!(e.to_string().contains("conv3d_bn_relu_train"), "{e}");
    let odd = Tensor::zeros((1, 2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let w2 = Tensor::zeros((3, 2, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let e =
        ops::conv_bn_relu_train(ops::LayerConv::Down, &odd, &w2, &c3, &c3, &c3, 1e-5).unwrap_err();
    assert!(e.to_string().contains("down_conv2_bn_relu_train"), "{e}");
    // The transposed convolution's weight is (Cin, Cout, ...): 2 input channels
    // against a weight for 3.
    let e =
        ops::conv_bn_relu_train(ops::LayerConv::Up, &odd, &w2, &c3, &c3, &c3, 1e-5).unwrap_err();
    assert!(e.to_string().contains("up_conv2_bn_relu_train"), "{e}");
}
