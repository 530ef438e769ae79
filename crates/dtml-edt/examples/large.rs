//! Peak memory of the signed map of a large volume (a 512^3 sphere by
//! default): `/usr/bin/time -f %M cargo run --release -p dtml-edt --example
//! large -- 512 512 512`. The mask is 1 byte per voxel and the output 4, so a
//! peak near 5 bytes per voxel means no hidden full-size temporaries.
use std::time::Instant;

#[derive(clap::Parser)]
struct Args {
    /// Volume size x y z.
    #[arg(num_args = 3, default_values_t = [512, 512, 512])]
    size: Vec<usize>,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let [nx, ny, nz] = [args.size[0], args.size[1], args.size[2]];
    let mut mask = vec![0u8; nx * ny * nz];
    let r2 = (nx.min(ny).min(nz) as f64 * 0.35).powi(2);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let d = |i: usize, n: usize| i as f64 - n as f64 / 2.0;
                let q = d(x, nx).powi(2) + d(y, ny).powi(2) + d(z, nz).powi(2);
                mask[(z * ny + y) * nx + x] = (q < r2) as u8;
            }
        }
    }
    let start = Instant::now();
    let sdm = dtml_edt::signed_distance(&mask, &[nz, ny, nx], &[1.0, 1.0, 1.0]).unwrap();
    let voxels = sdm.len() as f64;
    println!(
        "signed map of {nx}x{ny}x{nz}: {:.2} s; mask {:.0} MB + output {:.0} MB",
        start.elapsed().as_secs_f64(),
        voxels / 1e6,
        4.0 * voxels / 1e6
    );
}
