//! `dtml info`: what dtml reads from a volume file.

use anyhow::Result;
use dtml_volume::{ReadOptions, read_volume_with};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// NIfTI-1 (.nii, .nii.gz, .hdr/.img) or NRRD file.
    #[arg(required_unless_present = "system")]
    file: Option<PathBuf>,
    /// Print this machine instead: CPU model, SIMD features, the kernel tier
    /// in use (DTML_CPU=avx512|avx2|neon|portable forces one) and threads.
    #[arg(long, conflicts_with = "channel")]
    system: bool,
    /// With --system: also measure the single-precision FMA peak of each
    /// kernel tier (a register-only loop, 1 thread and all threads; about
    /// a second per tier), the limit `cargo xtask bench` compares with.
    #[arg(long, requires = "system")]
    peak: bool,
    /// Volume of a 4D file to read (0-based) [default: none: a file of
    /// several volumes is refused without it].
    #[arg(long)]
    channel: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn system(json: bool, peak: bool) -> Result<()> {
    use dtml_model::peak::{fma_peak, physical_cores};
    use dtml_model::simd::{Tier, active, cpu_features, cpu_model};
    let tier = active();
    let supported: Vec<&str> = Tier::supported().iter().map(|t| t.name()).collect();
    let forced = std::env::var(dtml_model::simd::TIER_VAR).ok();
    let threads = rayon::current_num_threads();
    let peaks: Vec<dtml_model::peak::Peak> = if peak {
        Tier::supported()
            .into_iter()
            .flat_map(|t| {
                let span = std::time::Duration::from_millis(300);
                [fma_peak(t, 1, span), fma_peak(t, threads, span)]
            })
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    if json {
        let j = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "cpu": cpu_model(),
            "features": cpu_features(),
            "kernel_tier": tier.name(),
            "supported_tiers": supported,
            "forced_by": forced,
            "threads": threads,
            "physical_cores": physical_cores(),
            "fma_peak": peaks,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("dtml {}", env!("CARGO_PKG_VERSION"));
        println!("cpu:           {}", cpu_model());
        println!("features:      {}", cpu_features().join(" "));
        println!(
            "kernel tier:   {tier}{}",
            forced.map_or(" (best supported)".into(), |f| format!(" (DTML_CPU={f})"))
        );
        println!("supported:     {}", supported.join(", "));
        println!("threads:       {threads} (--threads / RAYON_NUM_THREADS)");
        if let Some(cores) = physical_cores() {
            println!("cores:         {cores} physical behind the logical CPUs");
        }
        for p in &peaks {
            println!(
                "FMA peak:      {:8} {} thread(s): {:.1} GFLOP/s (f32)",
                p.tier, p.threads, p.gflops
            );
        }
    }
    Ok(())
}

pub fn run(a: InfoArgs) -> Result<()> {
    let Some(file) = a.file.filter(|_| !a.system) else {
        return system(a.json, a.peak);
    };
    let v = read_volume_with(&file, ReadOptions { channel: a.channel })?;
    let (min, max) = v.data.range();
    if a.json {
        let j = serde_json::json!({
            "file": file,
            "shape": v.shape,
            "dtype": v.data.dtype(),
            "spacing": v.spacing(),
            "affine": v.affine(),
            "qform_code": v.geometry.header.qform_code,
            "sform_code": v.geometry.header.sform_code,
            "min": min,
            "max": max,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("file     {}", file.display());
        println!(
            "shape    {} x {} x {} (x, y, z)",
            v.shape[0], v.shape[1], v.shape[2]
        );
        println!("dtype    {:?}", v.data.dtype());
        println!(
            "spacing  {:.4} x {:.4} x {:.4} mm",
            v.spacing()[0],
            v.spacing()[1],
            v.spacing()[2]
        );
        println!("range    {min} .. {max}");
        println!(
            "codes    qform {} sform {}",
            v.geometry.header.qform_code, v.geometry.header.sform_code
        );
        for row in v.affine() {
            println!(
                "affine   {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
                row[0], row[1], row[2], row[3]
            );
        }
    }
    Ok(())
}
