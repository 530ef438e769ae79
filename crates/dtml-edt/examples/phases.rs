//! Rough per-phase timings (development aid): `cargo run --release -p
//! dtml-edt --example phases [-- PREFIX]` (only the phases whose label
//! starts with PREFIX).
use std::time::Instant;

#[derive(clap::Parser)]
struct Args {
    /// Time only the phases whose label starts with this.
    only: Option<String>,
}

fn blob(shape: [usize; 3]) -> Vec<u8> {
    let [nz, ny, nx] = shape;
    let c = |i: usize, n: usize| (i as f64 + 0.5) / n as f64 * 2.0 - 1.0;
    let mut m = Vec::with_capacity(nz * ny * nx);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let (u, v, w) = (c(x, nx), c(y, ny), c(z, nz));
                let r = 0.57
                    * (1.0
                        + 0.12 * (5.0 * u).sin() * (4.0 * v).cos()
                        + 0.08 * (3.0 * w + 1.0).sin());
                m.push((u * u + v * v + w * w < r * r) as u8);
            }
        }
    }
    m
}

fn time(label: &str, mut f: impl FnMut()) {
    if let Some(only) = <Args as clap::Parser>::parse().only
        && !label.starts_with(&only)
    {
        return;
    }
    let mut t: Vec<f64> = (0..31)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    println!("{label:40} {:8.3} ms (min {:.3})", t[15], t[0]);
}

fn main() {
    let shape = [80usize, 112, 112];
    let m = blob(shape);
    let n = m.len();
    let mut out = vec![0.0f32; n];
    let one = [1.0f64; 3];
    time("pass1 only [1,1,n]", || {
        dtml_edt::signed_distance_into(&m, &[n], &[1.0], &mut out).unwrap()
    });
    time("pass1+2 [8960,112] 2D", || {
        dtml_edt::signed_distance_into(&m, &[80 * 112, 112], &[1.0, 1.0], &mut out).unwrap()
    });
    time("signed 3D", || {
        dtml_edt::signed_distance_into(&m, &shape, &one, &mut out).unwrap()
    });
    time("edt 3D", || {
        dtml_edt::edt_into(&m, &shape, &one, &mut out).unwrap()
    });
    time("signed_squared 3D", || {
        dtml_edt::signed_distance_squared(&m, &shape, &one).unwrap();
    });
    time("signed 3D again", || {
        dtml_edt::signed_distance_into(&m, &shape, &one, &mut out).unwrap()
    });
    time("sdm 3D", || {
        dtml_edt::normalized_sdm_batch(&m, 1, &shape).unwrap();
    });
}
