//! `cargo bench -p dtml-edt`: distance transforms on a training patch and on
//! whole volumes, with a smooth ~11 % foreground blob (same formula as
//! `bench/peers.py`), plus a STREAM-like copy to print a bandwidth floor.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dtml_edt::{Units, normalized_sdm_batch, signed_distance_into, surface_metrics};
use std::hint::black_box;
use std::time::Instant;

/// Smooth blob, ~11 % of the volume for r = 0.57 (see peers.py).
fn blob(shape: [usize; 3], r: f64, du: f64, dv: f64) -> Vec<u8> {
    let [nz, ny, nx] = shape;
    let c = |i: usize, n: usize| (i as f64 + 0.5) / n as f64 * 2.0 - 1.0;
    let mut m = Vec::with_capacity(nz * ny * nx);
    for z in 0..nz {
        let w = c(z, nz);
        for y in 0..ny {
            let v = c(y, ny) - dv;
            for x in 0..nx {
                let u = c(x, nx) - du;
                let rr = r
                    * (1.0
                        + 0.12 * (5.0 * u).sin() * (4.0 * v).cos()
                        + 0.08 * (3.0 * w + 1.0).sin());
                m.push((u * u + v * v + w * w < rr * rr) as u8);
            }
        }
    }
    m
}

fn reference(shape: [usize; 3]) -> Vec<u8> {
    blob(shape, 0.57, 0.0, 0.0)
}

fn prediction(shape: [usize; 3]) -> Vec<u8> {
    blob(shape, 0.57 * 0.97, 0.04, -0.03)
}

const PATCH: [usize; 3] = [80, 112, 112];
const MID: [usize; 3] = [96, 320, 320];
const LARGE: [usize; 3] = [128, 512, 512];
const ONES: [f64; 3] = [1.0, 1.0, 1.0];

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn median_secs(mut f: impl FnMut(), reps: usize) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// Prints copy bandwidth (bytes read + written per second, all threads) for
/// a cache-sized and a DRAM-sized buffer, and the floor for the patch's
/// signed map: 1 byte of mask read + 4 bytes of f32 written per voxel.
fn bandwidth_floor() {
    use rayon::prelude::*;
    let n_patch: usize = PATCH.iter().product();
    let touched = (n_patch * 5) as f64;
    for (label, bytes) in [
        ("patch-sized (5 MB)", n_patch * 5),
        ("DRAM (512 MB)", 1 << 29),
    ] {
        let words = bytes / 8;
        let src = vec![1u64; words];
        let mut dst = vec![0u64; words];
        let secs = median_secs(
            || {
                dst.par_chunks_mut(1 << 16)
                    .zip(src.par_chunks(1 << 16))
                    .for_each(|(d, s)| d.copy_from_slice(s));
                black_box(&dst);
            },
            if bytes > 1 << 26 { 7 } else { 101 },
        );
        let bw = 2.0 * (words * 8) as f64 / secs;
        println!(
            "copy bandwidth {label}: {:.1} GB/s -> signed-map floor for 112x112x80 \
             ({:.1} MB touched): {:.3} ms",
            bw / 1e9,
            touched / 1e6,
            touched / bw * 1e3
        );
    }
}

fn benches(c: &mut Criterion) {
    bandwidth_floor();
    let threads = rayon::current_num_threads();
    println!("rayon threads: {threads}");

    let patch = reference(PATCH);
    let frac = patch.iter().map(|&v| v as usize).sum::<usize>() as f64 / patch.len() as f64;
    println!("patch foreground fraction: {frac:.3}");
    let mut out = vec![0.0f32; patch.len()];
    let mut g = c.benchmark_group("patch_112x112x80");
    g.bench_function("signed_distance", |b| {
        b.iter(|| signed_distance_into(black_box(&patch), &PATCH, &ONES, &mut out).unwrap())
    });
    g.bench_function("edt", |b| {
        b.iter(|| dtml_edt::edt_into(black_box(&patch), &PATCH, &ONES, &mut out).unwrap())
    });
    g.bench_function("normalized_sdm", |b| {
        b.iter(|| normalized_sdm_batch(black_box(&patch), 1, &PATCH).unwrap())
    });
    let batch4: Vec<u8> = patch
        .iter()
        .copied()
        .cycle()
        .take(4 * patch.len())
        .collect();
    g.bench_function("normalized_sdm_batch4", |b| {
        b.iter(|| normalized_sdm_batch(black_box(&batch4), 4, &PATCH).unwrap())
    });
    let p1 = pool(1);
    g.bench_function("signed_distance_1thread", |b| {
        b.iter(|| {
            p1.install(|| signed_distance_into(black_box(&patch), &PATCH, &ONES, &mut out).unwrap())
        })
    });
    g.finish();

    let reference = reference(MID);
    let pred = prediction(MID);
    let sp = [2.5, 0.625, 0.625];
    let mut g = c.benchmark_group("volume_320x320x96");
    g.sample_size(10);
    g.bench_function("surface_metrics_hd95_asd", |b| {
        b.iter(|| {
            surface_metrics(black_box(&pred), &reference, &MID, &sp, Units::Millimetres).unwrap()
        })
    });
    let mut out = vec![0.0f32; reference.len()];
    for t in [1, 2] {
        let p = pool(t);
        g.bench_with_input(
            BenchmarkId::new("signed_distance_threads", t),
            &t,
            |b, _| {
                b.iter(|| {
                    p.install(|| signed_distance_into(&reference, &MID, &sp, &mut out).unwrap())
                })
            },
        );
    }
    g.finish();
    drop(out);

    let large = self::reference(LARGE);
    let mut out = vec![0.0f32; large.len()];
    let mut g = c.benchmark_group("volume_512x512x128");
    g.sample_size(10);
    for t in [1, 2] {
        let p = pool(t);
        g.bench_with_input(
            BenchmarkId::new("signed_distance_threads", t),
            &t,
            |b, _| {
                b.iter(|| {
                    p.install(|| signed_distance_into(&large, &LARGE, &ONES, &mut out).unwrap())
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("edt_threads", t), &t, |b, _| {
            b.iter(|| p.install(|| dtml_edt::edt_into(&large, &LARGE, &ONES, &mut out).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(edt_benches, benches);
criterion_main!(edt_benches);
