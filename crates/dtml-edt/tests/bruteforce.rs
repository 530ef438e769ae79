//! Property tests against brute-force definitions on small random masks.
#![allow(clippy::needless_range_loop)]

use dtml_edt::{
    Connectivity, SurfaceDistances, Units, largest_connected_component, normalized_sdm_batch,
    signed_distance, signed_distance_squared, surface_metrics,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    shape: Vec<usize>,
    spacing: Vec<f64>,
    mask: Vec<bool>,
}

fn case(max_side: usize) -> impl Strategy<Value = Case> {
    (1usize..=3)
        .prop_flat_map(move |nd| {
            (
                prop::collection::vec(1usize..=max_side, nd),
                prop::collection::vec(0.3f64..3.0, nd),
                0.05f64..0.95,
            )
        })
        .prop_flat_map(|(shape, spacing, p)| {
            let n: usize = shape.iter().product();
            let w = (p * 1000.0) as u32;
            (
                Just(shape),
                Just(spacing),
                prop::collection::vec(prop::bool::weighted(w.clamp(1, 999) as f64 / 1000.0), n),
            )
        })
        .prop_map(|(shape, spacing, mask)| Case {
            shape,
            spacing,
            mask,
        })
}

fn coords(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut i| {
            let mut c = vec![0; shape.len()];
            for k in (0..shape.len()).rev() {
                c[k] = i % shape[k];
                i /= shape[k];
            }
            c
        })
        .collect()
}

fn d2(a: &[usize], b: &[usize], sp: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(sp)
        .map(|((&x, &y), &s)| {
            let d = (x as f64 - y as f64) * s;
            d * d
        })
        .sum()
}

/// Squared distance from each voxel to the nearest voxel in `sites`.
fn brute_to(sites: &[bool], shape: &[usize], sp: &[f64]) -> Vec<f64> {
    let c = coords(shape);
    (0..c.len())
        .map(|i| {
            (0..c.len())
                .filter(|&j| sites[j])
                .map(|j| d2(&c[i], &c[j], sp))
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= 1e-6 + 1e-5 * want.abs()
}

fn face_neighbours(c: &[usize], shape: &[usize]) -> Vec<Option<Vec<usize>>> {
    let mut out = Vec::new();
    for k in 0..shape.len() {
        for d in [-1isize, 1] {
            let v = c[k] as isize + d;
            if v < 0 || v >= shape[k] as isize {
                out.push(None);
            } else {
                let mut q = c.to_vec();
                q[k] = v as usize;
                out.push(Some(q));
            }
        }
    }
    out
}

fn index(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(shape).fold(0, |a, (&x, &n)| a * n + x)
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let virt = q / 100.0 * (v.len() - 1) as f64;
    let lo = virt.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = virt - lo as f64;
    v[lo] + (v[hi] - v[lo]) * t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn edt_matches_brute_force(c in case(7)) {
        let n = c.mask.len();
        let bg: Vec<bool> = c.mask.iter().map(|&m| !m).collect();
        let to_bg = brute_to(&bg, &c.shape, &c.spacing);
        let to_fg = brute_to(&c.mask, &c.shape, &c.spacing);
        let e = dtml_edt::edt(&c.mask, &c.shape, &c.spacing).unwrap();
        let e2 = dtml_edt::edt_squared(&c.mask, &c.shape, &c.spacing).unwrap();
        let s = signed_distance(&c.mask, &c.shape, &c.spacing).unwrap();
        let s2 = signed_distance_squared(&c.mask, &c.shape, &c.spacing).unwrap();
        let u8mask: Vec<u8> = c.mask.iter().map(|&m| m as u8 * 7).collect();
        let eu = dtml_edt::edt(&u8mask, &c.shape, &c.spacing).unwrap();
        for i in 0..n {
            let (want2, want_s2) = if c.mask[i] { (to_bg[i], -to_bg[i]) } else { (0.0, to_fg[i]) };
            prop_assert!(close(e2[i] as f64, want2), "edt2 {i}: {} vs {}", e2[i], want2);
            prop_assert!(close(e[i] as f64, want2.sqrt()), "edt {i}: {} vs {}", e[i], want2.sqrt());
            prop_assert_eq!(e[i], eu[i]);
            prop_assert!(close(s2[i] as f64, want_s2), "s2 {i}: {} vs {}", s2[i], want_s2);
            let want_s = if c.mask[i] { -to_bg[i].sqrt() } else { to_fg[i].sqrt() };
            prop_assert!(close(s[i] as f64, want_s), "signed {i}: {} vs {}", s[i], want_s);
        }
    }

    #[test]
    fn normalized_sdm_matches_definition(c in case(6), c2 in case(6)) {
        // Batch of two masks of the first case's shape.
        let n = c.mask.len();
        let second: Vec<bool> = (0..n).map(|i| c2.mask[i % c2.mask.len()]).collect();
        let mut both = c.mask.clone();
        both.extend_from_slice(&second);
        let got = normalized_sdm_batch(&both, 2, &c.shape).unwrap();
        let ones = vec![1.0; c.shape.len()];
        let cs = coords(&c.shape);
        for (b, m) in [&c.mask, &second].into_iter().enumerate() {
            let bg: Vec<bool> = m.iter().map(|&v| !v).collect();
            let posdis: Vec<f64> = brute_to(&bg, &c.shape, &ones).iter().zip(m.iter())
                .map(|(d, &f)| if f { d.sqrt() } else { 0.0 }).collect();
            let negdis: Vec<f64> = brute_to(m, &c.shape, &ones).iter().zip(bg.iter())
                .map(|(d, &f)| if f { d.sqrt() } else { 0.0 }).collect();
            let has_fg = m.iter().any(|&v| v);
            let has_bg = bg.iter().any(|&v| v);
            let maxp = posdis.iter().copied().fold(0.0, f64::max);
            let maxn = negdis.iter().copied().fold(0.0, f64::max);
            for i in 0..n {
                let want = if !has_fg {
                    0.0
                } else if !has_bg {
                    -1.0
                } else {
                    let boundary = m[i] && face_neighbours(&cs[i], &c.shape).iter()
                        .any(|q| q.as_ref().is_some_and(|q| !m[index(q, &c.shape)]));
                    if boundary { 0.0 } else { negdis[i] / maxn - posdis[i] / maxp }
                };
                let g = got[b * n + i] as f64;
                prop_assert!((g - want).abs() <= 1e-6, "sample {b} voxel {i}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn surface_metrics_match_definition(c in case(7), c2 in case(7), vox in any::<bool>()) {
        let n = c.mask.len();
        let a = &c.mask;
        let b: Vec<bool> = (0..n).map(|i| c2.mask[(i * 7 + 3) % c2.mask.len()]).collect();
        let units = if vox { Units::Voxels } else { Units::Millimetres };
        let sp = if vox { vec![1.0; c.shape.len()] } else { c.spacing.clone() };
        let m = surface_metrics(a, &b, &c.shape, &c.spacing, units).unwrap();
        let na = a.iter().filter(|&&v| v).count();
        let nb = b.iter().filter(|&&v| v).count();
        let inter = a.iter().zip(&b).filter(|&(&x, &y)| x && y).count();
        if na + nb > 0 {
            let dice = 2.0 * inter as f64 / (na + nb) as f64;
            prop_assert!((m.dice.unwrap() - dice).abs() < 1e-12);
            let jac = inter as f64 / (na + nb - inter) as f64;
            prop_assert!((m.jaccard.unwrap() - jac).abs() < 1e-12);
        } else {
            prop_assert!(m.dice.is_none() && m.jaccard.is_none());
        }
        match (na > 0, nb > 0) {
            (false, false) => prop_assert_eq!(m.distances, SurfaceDistances::BothEmpty),
            (false, true) => {
                prop_assert_eq!(m.distances, SurfaceDistances::EmptyPrediction);
                prop_assert_eq!(m.reference_scoring(), Some([0.0; 4]));
            }
            (true, false) => {
                prop_assert_eq!(m.distances, SurfaceDistances::EmptyReference);
                prop_assert_eq!(m.reference_scoring(), None);
            }
            (true, true) => {
                let cs = coords(&c.shape);
                let surf = |m: &[bool]| -> Vec<bool> {
                    (0..n).map(|i| m[i] && face_neighbours(&cs[i], &c.shape).iter()
                        .any(|q| q.as_ref().is_none_or(|q| !m[index(q, &c.shape)]))).collect()
                };
                let (sa, sb) = (surf(a), surf(&b));
                let directed = |from: &[bool], to: &[bool]| -> Vec<f64> {
                    let d = brute_to(to, &c.shape, &sp);
                    (0..n).filter(|&i| from[i]).map(|i| d[i].sqrt()).collect()
                };
                let dab = directed(&sa, &sb);
                let dba = directed(&sb, &sa);
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                let mut all = dab.clone();
                all.extend_from_slice(&dba);
                let d = m.distances.computed().unwrap();
                prop_assert!(close(d.asd, mean(&dab)), "asd {} vs {}", d.asd, mean(&dab));
                prop_assert!(close(d.asd_reference_to_prediction, mean(&dba)));
                prop_assert!(close(d.assd_mean_of_means, 0.5 * (mean(&dab) + mean(&dba))));
                prop_assert!(close(d.assd, mean(&all)));
                let hd = all.iter().copied().fold(0.0, f64::max);
                prop_assert!(close(d.hausdorff, hd));
                let p = percentile(all, 95.0);
                prop_assert!(close(d.hd95, p), "hd95 {} vs {}", d.hd95, p);
                prop_assert_eq!(d.prediction_surface_voxels, dab.len());
                prop_assert_eq!(d.reference_surface_voxels, dba.len());
            }
        }
    }

    #[test]
    fn largest_component_matches_flood_fill(c in case(7), full in any::<bool>()) {
        let conn = if full { Connectivity::Full } else { Connectivity::Face };
        let got = largest_connected_component(&c.mask, &c.shape, conn).unwrap();
        let cs = coords(&c.shape);
        let n = c.mask.len();
        let adjacent = |i: usize, j: usize| {
            let diffs: Vec<usize> = cs[i].iter().zip(&cs[j]).map(|(&x, &y)| x.abs_diff(y)).collect();
            diffs.iter().all(|&d| d <= 1)
                && (full || diffs.iter().sum::<usize>() == 1)
        };
        let mut label = vec![0usize; n];
        let mut sizes = vec![0usize];
        for s in 0..n {
            if !c.mask[s] || label[s] != 0 { continue; }
            let l = sizes.len();
            sizes.push(0);
            let mut stack = vec![s];
            label[s] = l;
            while let Some(i) = stack.pop() {
                sizes[l] += 1;
                for j in 0..n {
                    if c.mask[j] && label[j] == 0 && adjacent(i, j) {
                        label[j] = l;
                        stack.push(j);
                    }
                }
            }
        }
        // np.argmax picks the first maximum; labels are in raster order.
        let best = (1..sizes.len()).fold(0, |b, l| if b == 0 || sizes[l] > sizes[b] { l } else { b });
        for i in 0..n {
            prop_assert_eq!(got[i], best != 0 && label[i] == best, "voxel {}", i);
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let m = vec![true; 6];
    assert!(dtml_edt::edt(&m, &[2, 2], &[1.0, 1.0]).is_err());
    assert!(dtml_edt::edt(&m, &[2, 3], &[1.0]).is_err());
    assert!(dtml_edt::edt(&m, &[2, 3], &[1.0, 0.0]).is_err());
    assert!(dtml_edt::edt(&m, &[2, 3], &[1.0, f64::NAN]).is_err());
    assert!(dtml_edt::edt(&m, &[1, 1, 2, 3], &[1.0; 4]).is_err());
    assert!(dtml_edt::edt::<bool>(&[], &[], &[]).is_err());
    assert!(normalized_sdm_batch(&m, 2, &[2, 3]).is_err());
    assert!(surface_metrics(&m, &m[..5], &[2, 3], &[1.0, 1.0], Units::Voxels).is_err());
    assert!(dtml_edt::dice(&m, &m[..5]).is_err());
    let mut out = vec![0.0; 5];
    assert!(dtml_edt::signed_distance_into(&m, &[2, 3], &[1.0, 1.0], &mut out).is_err());
    assert!(largest_connected_component(&m, &[7], Connectivity::Full).is_err());
    // Zero-sized axes are valid and give empty outputs.
    assert!(
        dtml_edt::edt::<bool>(&[], &[0, 3], &[1.0, 1.0])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn no_background_is_infinite() {
    let m = vec![1u8; 12];
    let e = dtml_edt::edt(&m, &[3, 4], &[1.0, 1.0]).unwrap();
    assert!(e.iter().all(|v| *v == f32::INFINITY));
    let s = signed_distance(&m, &[3, 4], &[1.0, 1.0]).unwrap();
    assert!(s.iter().all(|v| *v == f32::NEG_INFINITY));
    let z = vec![0u8; 12];
    assert!(
        dtml_edt::edt(&z, &[3, 4], &[1.0, 1.0])
            .unwrap()
            .iter()
            .all(|v| *v == 0.0)
    );
    assert!(
        signed_distance(&z, &[3, 4], &[1.0, 1.0])
            .unwrap()
            .iter()
            .all(|v| *v == f32::INFINITY)
    );
}

#[test]
fn larger_volumes_take_the_fused_path() {
    // Enough planes for the per-plane fused path on any thread count; check
    // against the strided path by transposing a 2D problem into 3D shapes.
    let (nz, ny, nx) = (64usize, 5usize, 37usize);
    let mask: Vec<u8> = (0..nz * ny * nx)
        .map(|i| {
            let (z, y, x) = (i / (ny * nx), (i / nx) % ny, i % nx);
            let (dz, dy, dx) = (z as f64 - 30.0, y as f64 - 2.0, x as f64 - 18.0);
            (dz * dz / 400.0 + dy * dy / 4.0 + dx * dx / 100.0 < 1.0) as u8
        })
        .collect();
    let sp = [1.5, 0.7, 1.1];
    let s = signed_distance_squared(&mask, &[nz, ny, nx], &sp).unwrap();
    let sites_fg: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
    let sites_bg: Vec<bool> = mask.iter().map(|&m| m == 0).collect();
    let shape = [nz, ny, nx];
    let cs = coords(&shape);
    for i in (0..mask.len()).step_by(17) {
        let sites = if mask[i] != 0 { &sites_bg } else { &sites_fg };
        let want = (0..mask.len())
            .filter(|&j| sites[j])
            .map(|j| d2(&cs[i], &cs[j], &sp))
            .fold(f64::INFINITY, f64::min);
        let want = if mask[i] != 0 { -want } else { want };
        assert!(close(s[i] as f64, want), "{i}: {} vs {want}", s[i]);
    }
}
