//! `dtml info --system` and the `DTML_CPU` kernel-tier override.

#[allow(dead_code)] // the helpers without an environment are for the other files
mod common;

use common::dtml_bin;
use std::process::{Command, Output};

fn with_tier(tier: Option<&str>) -> Output {
    let mut cmd = Command::new(dtml_bin());
    cmd.args(["info", "--system", "--json"])
        .env("DTML_LOG", "warn");
    match tier {
        Some(t) => cmd.env("DTML_CPU", t),
        None => cmd.env_remove("DTML_CPU"),
    };
    cmd.output().expect("start dtml")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn reports_the_cpu_and_honours_a_forced_tier() {
    let v = json(&with_tier(None));
    let supported: Vec<String> = v["supported_tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert!(supported.contains(&"portable".to_string()), "{v}");
    assert_eq!(
        v["kernel_tier"].as_str().unwrap(),
        supported[0],
        "best tier by default"
    );
    assert!(v["threads"].as_u64().unwrap() >= 1);
    for tier in &supported {
        let forced = json(&with_tier(Some(tier)));
        assert_eq!(forced["kernel_tier"].as_str().unwrap(), tier);
    }
}

#[test]
fn refuses_unknown_or_unsupported_tiers() {
    let out = with_tier(Some("sse9"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DTML_CPU=sse9") && err.contains("unknown kernel tier"),
        "{err}"
    );
    let v = json(&with_tier(None));
    let supported = v["supported_tiers"].to_string();
    let missing = ["avx512", "avx2", "neon"]
        .into_iter()
        .find(|t| !supported.contains(&format!("\"{t}\"")))
        .expect("no CPU has both x86 and ARM tiers");
    let out = with_tier(Some(missing));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot run") && !err.contains("panicked"),
        "{err}"
    );
}
