//! Golden tests against scipy, scikit-image and medpy, computed live by the
//! Python interpreter named in `DTML_PYTHON` (see tests/golden.py).
//!
//! `DTML_PYTHON` unset: the test fails when `CI=true`, otherwise it prints a
//! skip note and passes. Run locally with
//! `DTML_PYTHON=target/pyenv/bin/python cargo test -p dtml-edt`.

use dtml_edt::{Connectivity, Units};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> Option<PathBuf> {
    match std::env::var_os("DTML_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "DTML_PYTHON is not set but CI=true: the golden tests against \
                     scipy/scikit-image/medpy must run in CI (cargo xtask test sets it)"
                );
            }
            eprintln!(
                "SKIP dtml-edt golden tests: DTML_PYTHON is not set \
                 (e.g. DTML_PYTHON=target/pyenv/bin/python)"
            );
            None
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A few random ellipsoids plus sparse noise voxels (several components,
/// holes, voxels on the array border).
fn blobs(shape: &[usize], seed: u64, n_blobs: usize, noise: f64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let nd = shape.len();
    let ell: Vec<(Vec<f64>, Vec<f64>)> = (0..n_blobs)
        .map(|_| {
            let c = shape.iter().map(|&n| r.next() * n as f64).collect();
            let ax = shape
                .iter()
                .map(|&n| 1.0 + r.next() * n as f64 * 0.35)
                .collect();
            (c, ax)
        })
        .collect();
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut i| {
            let mut p = vec![0.0; nd];
            for k in (0..nd).rev() {
                p[k] = (i % shape[k]) as f64;
                i /= shape[k];
            }
            let inside = ell.iter().any(|(c, ax)| {
                (0..nd)
                    .map(|k| ((p[k] - c[k]) / ax[k]).powi(2))
                    .sum::<f64>()
                    < 1.0
            });
            (inside ^ (r.next() < noise)) as u8
        })
        .collect()
}

struct Case {
    name: &'static str,
    shape: Vec<usize>,
    spacing: Vec<f64>,
    a: Vec<u8>,
    b: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name, shape: Vec<usize>, spacing: Vec<f64>, seed, nb, noise| {
        let a = blobs(&shape, seed, nb, noise);
        let b = blobs(&shape, seed + 1000, nb, noise);
        v.push(Case {
            name,
            shape,
            spacing,
            a,
            b,
        });
    };
    add("patch3d", vec![40, 36, 30], vec![2.5, 0.7, 0.9], 1, 3, 0.0);
    add("noisy3d", vec![24, 20, 18], vec![1.3, 0.6, 1.0], 2, 4, 0.03);
    add("iso3d", vec![21, 23, 25], vec![1.0, 1.0, 1.0], 3, 2, 0.01);
    add("plane2d", vec![50, 45], vec![0.8, 1.7], 4, 3, 0.02);
    add("thin_z", vec![1, 30, 25], vec![3.0, 0.5, 0.75], 5, 2, 0.0);
    add("thin_y", vec![12, 1, 20], vec![1.1, 2.0, 0.4], 6, 2, 0.05);
    add("line1d", vec![64], vec![0.3], 7, 3, 0.05);
    add("dense3d", vec![16, 17, 18], vec![0.9, 1.2, 1.0], 8, 6, 0.02);
    v
}

fn read_f64(p: &Path) -> Vec<f64> {
    std::fs::read(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-6 + 1e-5 * want.abs()
}

#[test]
fn golden_against_scipy_skimage_medpy() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = cases();
    let mut list = String::new();
    for c in &cases {
        std::fs::write(d.join(format!("{}.a.u8", c.name)), &c.a).unwrap();
        std::fs::write(d.join(format!("{}.b.u8", c.name)), &c.b).unwrap();
        let dims: Vec<String> = c.shape.iter().map(|x| x.to_string()).collect();
        let sp: Vec<String> = c.spacing.iter().map(|x| format!("{x:?}")).collect();
        list += &format!(
            "{} {} {} {}\n",
            c.name,
            c.shape.len(),
            dims.join(" "),
            sp.join(" ")
        );
    }
    std::fs::write(d.join("cases.txt"), list).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg(d)
        .output()
        .unwrap_or_else(|e| panic!("cannot run DTML_PYTHON={}: {e}", py.display()));
    assert!(
        out.status.success(),
        "golden.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for c in &cases {
        let n = c.a.len();
        assert!(
            c.a.contains(&0) && c.a.iter().any(|&x| x != 0),
            "{}",
            c.name
        );

        // Exact EDT vs scipy.ndimage.distance_transform_edt(sampling=...).
        let want = read_f64(&d.join(format!("{}.edt.f64", c.name)));
        let got = dtml_edt::edt(&c.a, &c.shape, &c.spacing).unwrap();
        assert_eq!(want.len(), n);
        for i in 0..n {
            assert!(
                close(got[i] as f64, want[i]),
                "{} edt[{i}]: {} vs {}",
                c.name,
                got[i],
                want[i]
            );
        }
        // The signed map is edt(~a) - edt(a).
        let inv: Vec<u8> = c.a.iter().map(|&x| (x == 0) as u8).collect();
        let got_inv = dtml_edt::edt(&inv, &c.shape, &c.spacing).unwrap();
        let signed = dtml_edt::signed_distance(&c.a, &c.shape, &c.spacing).unwrap();
        for i in 0..n {
            let w = got_inv[i] as f64 - want[i];
            assert!(close(signed[i] as f64, w), "{} signed[{i}]", c.name);
        }

        // Normalised SDM vs the reference compute_sdf (1e-6 absolute).
        let want = read_f64(&d.join(format!("{}.sdm.f64", c.name)));
        let got = dtml_edt::normalized_sdm(&c.a, &c.shape).unwrap();
        for i in 0..n {
            assert!(
                (got[i] as f64 - want[i]).abs() <= 1e-6,
                "{} sdm[{i}]: {} vs {}",
                c.name,
                got[i],
                want[i]
            );
        }
        // ... also as part of a batch.
        let mut batch = c.b.clone();
        batch.extend_from_slice(&c.a);
        let got = dtml_edt::normalized_sdm_batch(&batch, 2, &c.shape).unwrap();
        for i in 0..n {
            assert!(
                (got[n + i] as f64 - want[i]).abs() <= 1e-6,
                "{} batch sdm[{i}]",
                c.name
            );
        }

        // Largest connected component vs skimage.measure.label.
        let want = std::fs::read(d.join(format!("{}.lcc.u8", c.name))).unwrap();
        let got =
            dtml_edt::largest_connected_component(&c.a, &c.shape, Connectivity::Full).unwrap();
        for i in 0..n {
            assert_eq!(got[i], want[i] != 0, "{} lcc[{i}]", c.name);
        }

        // medpy metrics, in mm and in voxels.
        let text = std::fs::read_to_string(d.join(format!("{}.metrics.txt", c.name))).unwrap();
        let m: HashMap<&str, f64> = text
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k, v.trim().parse::<f64>().unwrap())
            })
            .collect();
        for (tag, units) in [("mm", Units::Millimetres), ("vox", Units::Voxels)] {
            let r = dtml_edt::surface_metrics(&c.a, &c.b, &c.shape, &c.spacing, units).unwrap();
            assert!(close(r.dice.unwrap(), m["dice"]), "{} dice", c.name);
            assert!(
                close(r.jaccard.unwrap(), m["jaccard"]),
                "{} jaccard",
                c.name
            );
            let dm = r.distances.computed().expect("both masks non-empty");
            for (k, got) in [
                ("hd95", dm.hd95),
                ("hd", dm.hausdorff),
                ("asd", dm.asd),
                ("asd_rev", dm.asd_reference_to_prediction),
                ("assd", dm.assd),
                ("assd_old", dm.assd_mean_of_means),
            ] {
                let want = m[format!("{k}_{tag}").as_str()];
                assert!(close(got, want), "{} {k}_{tag}: {got} vs {want}", c.name);
            }
        }
    }
}
