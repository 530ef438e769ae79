//! Distributions of what a training step is fed, over many draws: the part
//! of training the lockstep test (which hands both sides the same batch)
//! cannot see (issue 21).
//!
//! The reference (`../shared/reference/peer_dtml_train.py`, and the released
//! code's `RandomRotFlip` + `RandomCrop`) draws every choice uniformly with
//! numpy: a quarter turn in the x-y plane out of 4, a flip of x or y, then a
//! crop origin per axis of the turned volume out of every position (a
//! volume smaller than the patch is zero-padded around it first). Those
//! distributions are known exactly, so each check here compares our draws
//! with them by a chi-square or binomial test at a fixed seed. Every check
//! allows a false alarm rate of 1e-4 and is deterministic (fixed seeds); a
//! bias larger than sampling noise fails it.
//!
//! Case draws differ from the shared reference on purpose: `method.md`
//! (the released code's two-stream sampler) reshuffles each stream once per
//! pass, where the reference draws with replacement. Both give every case
//! the same expected share; the permutation gives it exactly, and a batch
//! never repeats one case more than its share allows.

use dtml_train::TrainConfig;
use dtml_train::batch::{Augmentation, Stream, TrainingSet, plan_for, rng_for};
use dtml_train::method::Method;
use dtml_volume::prepare::GridBox;
use dtml_volume::{PreparedCase, Xyz};
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Per-check false alarm rate.
const ALPHA: f64 = 1e-4;

/// Fails unless `counts` fit equal expected counts at level [`ALPHA`].
fn assert_uniform(counts: &[u64], what: &str) {
    let n: u64 = counts.iter().sum();
    let expected = n as f64 / counts.len() as f64;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let df = (counts.len() - 1) as f64;
    let critical = ChiSquared::new(df).unwrap().inverse_cdf(1.0 - ALPHA);
    assert!(
        chi2 < critical,
        "{what}: chi-square {chi2:.1} over {df} degrees of freedom exceeds {critical:.1} (counts {counts:?})"
    );
}

/// Fails unless `hits` of `n` trials fit probability `p` (normal
/// approximation, two-sided, level [`ALPHA`]: 3.9 standard errors).
fn assert_rate(hits: u64, n: u64, p: f64, what: &str) {
    let se = (p * (1.0 - p) / n as f64).sqrt();
    let got = hits as f64 / n as f64;
    assert!(
        (got - p).abs() < 3.9 * se,
        "{what}: observed {got:.4}, expected {p:.4} (standard error {se:.4})"
    );
}

fn turned(shape: Xyz<usize>, quarter_turns: usize) -> Xyz<usize> {
    if quarter_turns % 2 == 1 {
        Xyz::new(shape.y(), shape.x(), shape.z())
    } else {
        shape
    }
}

#[test]
fn rotations_and_flips_are_uniform_over_the_eight_views() {
    let (shape, patch) = (Xyz::new(80, 80, 56), Xyz::new(48, 48, 32));
    let mut rng = rng_for(21, Stream::Augment, 0);
    let mut views = [0u64; 8];
    for _ in 0..80_000 {
        let a = Augmentation::draw(&mut rng, shape, patch);
        views[a.quarter_turns * 2 + a.flip_axis] += 1;
    }
    assert_uniform(&views, "(quarter turns, flip axis)");
    let turns: Vec<u64> = (0..4).map(|k| views[2 * k] + views[2 * k + 1]).collect();
    assert_uniform(&turns, "quarter turns");
    let flips: Vec<u64> = (0..2)
        .map(|f| (0..4).map(|k| views[2 * k + f]).sum())
        .collect();
    assert_uniform(&flips, "flip axis");
}

#[test]
fn crop_origins_are_uniform_per_axis_of_the_turned_volume() {
    // Not square in x-y, so a quarter turn swaps the slack of x and y.
    let (shape, patch) = (Xyz::new(72, 56, 40), Xyz::new(48, 48, 32));
    let mut rng = rng_for(22, Stream::Augment, 0);
    // Histograms per (turn parity, axis) over the origins 0..=slack.
    let mut hist: Vec<Vec<Vec<u64>>> = (0..2)
        .map(|parity| {
            let t = turned(shape, parity);
            (0..3).map(|a| vec![0u64; t[a] - patch[a] + 1]).collect()
        })
        .collect();
    let draws = 60_000u64;
    for _ in 0..draws {
        let a = Augmentation::draw(&mut rng, shape, patch);
        let parity = a.quarter_turns % 2;
        for (axis, h) in hist[parity].iter_mut().enumerate() {
            let o = a.origin[axis];
            assert!(o >= 0 && (o as usize) < h.len(), "origin {o} out of range");
            h[o as usize] += 1;
        }
    }
    for (parity, axes) in hist.iter().enumerate() {
        for (axis, h) in axes.iter().enumerate() {
            let what = format!("crop origin, axis {axis}, turn parity {parity}");
            assert_uniform(h, &what);
            // How often a crop touches the volume's border on this axis: the
            // two extreme origins of `slack + 1`.
            let n: u64 = h.iter().sum();
            let border = h[0] + h[h.len() - 1];
            assert_rate(border, n, 2.0 / h.len() as f64, &format!("{what}: border"));
        }
    }
}

#[test]
fn volumes_smaller_than_the_patch_are_padded_at_uniform_offsets() {
    // Every axis shorter than the patch: the volume sits at a uniform
    // offset inside the zero-padded crop, as `np.pad` then `RandomCrop`.
    let (shape, patch) = (Xyz::new(40, 40, 20), Xyz::new(48, 48, 32));
    let mut rng = rng_for(23, Stream::Augment, 0);
    let mut hist: Vec<Vec<u64>> = (0..3).map(|a| vec![0; patch[a] - shape[a] + 1]).collect();
    for _ in 0..40_000 {
        let a = Augmentation::draw(&mut rng, shape, patch);
        for (axis, h) in hist.iter_mut().enumerate() {
            let o = a.origin[axis];
            let slack = shape[axis] as i64 - patch[axis] as i64;
            assert!((slack..=0).contains(&o), "origin {o} outside {slack}..=0");
            h[(o - slack) as usize] += 1;
        }
    }
    for (axis, h) in hist.iter().enumerate() {
        assert_uniform(h, &format!("padded offset, axis {axis}"));
    }
}

/// A label: a ball near one corner of the x-y plane, so views differ.
fn corner_ball(shape: Xyz<usize>) -> Vec<u8> {
    let centre = [8.0, 11.0, 9.0];
    let mut label = vec![0u8; shape.voxels()];
    for z in 0..shape.z() {
        for y in 0..shape.y() {
            for x in 0..shape.x() {
                let d2 = (x as f64 - centre[0]).powi(2)
                    + (y as f64 - centre[1]).powi(2)
                    + (z as f64 - centre[2]).powi(2);
                label[(z * shape.y() + y) * shape.x() + x] = u8::from(d2 < 25.0);
            }
        }
    }
    label
}

/// Exact share of crops holding foreground, and mean foreground fraction
/// per crop, when views and origins are uniform: every view's whole
/// volume, summed-area table, every origin.
fn exact_label_statistics(label: &[u8], shape: Xyz<usize>, patch: Xyz<usize>) -> (f64, f64) {
    let (mut touching, mut fraction, mut crops) = (0.0, 0.0, 0.0);
    for quarter_turns in 0..4 {
        for flip_axis in 0..2 {
            let t = turned(shape, quarter_turns);
            let whole = Augmentation {
                quarter_turns,
                flip_axis,
                origin: Xyz::new(0, 0, 0),
            };
            let mut view = vec![0u8; t.voxels()];
            whole.extract(label, GridBox::whole(shape), shape, t, &mut view, 0);
            // sat[(z, y, x)] = foreground voxels in [0, x) x [0, y) x [0, z).
            let (sx, sy) = (t.x() + 1, t.y() + 1);
            let mut sat = vec![0u64; sx * sy * (t.z() + 1)];
            let at = |x: usize, y: usize, z: usize| (z * sy + y) * sx + x;
            for z in 1..=t.z() {
                for y in 1..=t.y() {
                    for x in 1..=t.x() {
                        let v = u64::from(view[((z - 1) * t.y() + y - 1) * t.x() + x - 1]);
                        sat[at(x, y, z)] =
                            v + sat[at(x - 1, y, z)] + sat[at(x, y - 1, z)] + sat[at(x, y, z - 1)]
                                - sat[at(x - 1, y - 1, z)]
                                - sat[at(x - 1, y, z - 1)]
                                - sat[at(x, y - 1, z - 1)]
                                + sat[at(x - 1, y - 1, z - 1)];
                    }
                }
            }
            for oz in 0..=t.z() - patch.z() {
                for oy in 0..=t.y() - patch.y() {
                    for ox in 0..=t.x() - patch.x() {
                        let (ex, ey, ez) = (ox + patch.x(), oy + patch.y(), oz + patch.z());
                        let fg = sat[at(ex, ey, ez)]
                            + sat[at(ox, oy, ez)]
                            + sat[at(ox, ey, oz)]
                            + sat[at(ex, oy, oz)]
                            - sat[at(ox, ey, ez)]
                            - sat[at(ex, oy, ez)]
                            - sat[at(ex, ey, oz)]
                            - sat[at(ox, oy, oz)];
                        touching += f64::from(u8::from(fg > 0));
                        fraction += fg as f64 / patch.voxels() as f64;
                        crops += 1.0;
                    }
                }
            }
        }
    }
    // Every view of a square x-y plane has the same number of origins, so
    // the plain mean over (view, origin) pairs is the uniform draw's.
    (touching / crops, fraction / crops)
}

#[test]
fn crops_hold_the_label_as_often_as_uniform_crops_do() {
    let (shape, patch) = (Xyz::new(64, 64, 32), Xyz::new(32, 32, 16));
    let label = corner_ball(shape);
    let (p_touch, mean_fraction) = exact_label_statistics(&label, shape, patch);
    assert!(
        p_touch > 0.05 && p_touch < 0.95,
        "a test that can fail: {p_touch}"
    );
    let mut rng = rng_for(24, Stream::Augment, 0);
    let draws = 4000u64;
    let (mut touching, mut fractions) = (0u64, Vec::with_capacity(draws as usize));
    let mut crop = vec![0u8; patch.voxels()];
    for _ in 0..draws {
        let a = Augmentation::draw(&mut rng, shape, patch);
        a.extract(&label, GridBox::whole(shape), shape, patch, &mut crop, 0);
        let fg = crop.iter().filter(|&&v| v > 0).count();
        touching += u64::from(fg > 0);
        fractions.push(fg as f64 / patch.voxels() as f64);
    }
    assert_rate(touching, draws, p_touch, "crops holding foreground");
    let mean = fractions.iter().sum::<f64>() / draws as f64;
    let sd =
        (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / (draws - 1) as f64).sqrt();
    let se = sd / (draws as f64).sqrt();
    assert!(
        (mean - mean_fraction).abs() < 3.9 * se,
        "mean foreground fraction per crop {mean:.5}, uniform crops give {mean_fraction:.5} (standard error {se:.5})"
    );
}

fn cases(n: usize, labelled: bool) -> Vec<PreparedCase> {
    let shape = Xyz::new(16, 16, 16);
    (0..n)
        .map(|_| PreparedCase {
            image: vec![0.0; shape.voxels()],
            label: labelled.then(|| vec![0; shape.voxels()]),
            shape,
        })
        .collect()
}

#[test]
fn case_draws_give_every_case_its_share_and_batches_mix_cases() {
    // The LA-like study's shape: 3 labelled cases, 29 unlabelled ones.
    let set = TrainingSet::in_memory(cases(3, true), cases(29, false));
    let iterations = 3 * 29 * 8;
    for method in [Method::Supervised, Method::Dtml] {
        let cfg = TrainConfig {
            method,
            patch: Xyz::new(16, 16, 16),
            iterations,
            ..TrainConfig::default()
        };
        let (nl, nu) = cfg.batch_shape();
        let mut labelled = vec![0u64; 3];
        let mut unlabelled = vec![0u64; 29];
        let mut most_repeats = 0;
        for t in 0..iterations {
            let plan = plan_for(t, &cfg, &set).unwrap();
            assert_eq!(plan.len(), nl + nu);
            let mut per_case = [0usize; 3];
            for p in &plan {
                if p.labelled {
                    labelled[p.case] += 1;
                    per_case[p.case] += 1;
                } else {
                    unlabelled[p.case] += 1;
                }
            }
            most_repeats = most_repeats.max(*per_case.iter().max().unwrap());
        }
        // Whole passes: every case exactly its share (the reference's
        // draws with replacement match it only in expectation).
        let share = (iterations * nl / 3) as u64;
        assert_eq!(labelled, vec![share; 3], "{method:?}: labelled draws");
        if nu > 0 {
            let share = (iterations * nu / 29) as u64;
            assert_eq!(unlabelled, vec![share; 29], "{method:?}: unlabelled draws");
        }
        // A batch of `nl` from passes over 3 cases repeats a case at most
        // ceil(nl / 3) + 1 times; the reference puts all 4 supervised
        // patches on one case in 1 batch of 27.
        assert!(
            most_repeats <= nl.div_ceil(3) + 1,
            "{method:?}: one case {most_repeats} times in a batch of {nl}"
        );
    }
}
