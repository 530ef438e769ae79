//! `dtml generate`, `dtml prepare` and `dtml info` run as a user would.

mod common;
use common::{dtml_err, dtml_ok, s};

#[test]
fn generate_then_prepare_builds_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("prepared");
    dtml_ok(&[
        "generate",
        "--out",
        s(&data),
        "--shape",
        "32,32,24",
        "--train-cases",
        "5",
        "--test-cases",
        "2",
        "--seed",
        "3",
    ]);
    assert!(data.join("dataset.json").is_file());
    dtml_ok(&[
        "prepare",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--labelled",
        "2",
        "--patch",
        "24,24,16",
        "--margin",
        "4,4,full",
    ]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    let roles: Vec<&str> = cases.iter().map(|c| c["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "labelled").count(), 2);
    assert_eq!(roles.iter().filter(|r| **r == "unlabelled").count(), 3);
    assert_eq!(roles.iter().filter(|r| **r == "test").count(), 2);
    for c in cases {
        assert!(out.join(c["file"].as_str().unwrap()).is_file());
        let shape: Vec<u64> = c["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            shape[0] >= 24 && shape[1] >= 24 && shape[2] >= 16,
            "{shape:?}"
        );
    }
    // The cache opens through the library as well.
    let prep = dtml_volume::PreparedDataset::open(&out).unwrap();
    let rec = prep.cases(dtml_volume::Role::Labelled).next().unwrap();
    let case = prep.load(rec).unwrap();
    assert!(case.label.unwrap().contains(&1));
}

#[test]
fn info_prints_geometry_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dtml_ok(&[
        "generate",
        "--out",
        s(&data),
        "--shape",
        "24,20,16",
        "--train-cases",
        "1",
        "--test-cases",
        "0",
    ]);
    let label = std::fs::read_dir(data.join("labelsTr"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let j: serde_json::Value =
        serde_json::from_str(&dtml_ok(&["info", "--json", s(&label)])).unwrap();
    assert_eq!(j["shape"], serde_json::json!([24, 20, 16]));
    assert_eq!(j["dtype"], "u8");
    assert_eq!(j["max"], 1.0);
}

#[test]
fn bad_input_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.nii.gz");
    let err = dtml_err(&["info", s(&missing)]);
    assert!(err.contains("nope.nii.gz"), "{err}");
    let junk = dir.path().join("junk.nii");
    std::fs::write(&junk, b"definitely not a nifti file").unwrap();
    let err = dtml_err(&["info", s(&junk)]);
    assert!(err.contains("junk.nii") && err.contains("shorter"), "{err}");
    let err = dtml_err(&[
        "prepare",
        "--data",
        s(dir.path()),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert!(err.contains("no dataset.json"), "{err}");
    let err = dtml_err(&[
        "prepare",
        "--data",
        s(dir.path()),
        "--out",
        "x",
        "--patch",
        "1,2",
    ]);
    assert!(err.contains("three values"), "{err}");
}

/// Case files (not receipts) of a cache folder: name -> (inode, mtime).
#[cfg(unix)]
fn case_stamps(
    folder: &std::path::Path,
) -> std::collections::BTreeMap<String, (u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(folder.join("cases")) else {
        return Default::default();
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap(),
            )
        })
        .filter(|(n, _)| n.ends_with(".safetensors"))
        .map(|(n, m)| (n, (m.ino(), m.modified().unwrap())))
        .collect()
}

#[cfg(unix)]
#[test]
fn a_prepare_killed_midway_resumes_without_redoing_finished_cases() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 40 scans of 128x128x64 (a real scan's size once cropped: 4 MiB of f32).
    dtml_ok(&[
        "generate",
        "--out",
        s(&data),
        "--shape",
        "128,128,64",
        "--train-cases",
        "40",
        "--test-cases",
        "0",
        "--seed",
        "4",
    ]);
    let args = |out: &std::path::Path| -> Vec<String> {
        [
            "prepare",
            "--data",
            s(&data),
            "--out",
            s(out),
            "--labelled",
            "8",
            "--patch",
            "32,32,16",
        ]
        .map(String::from)
        .to_vec()
    };
    let out = dir.path().join("prepared");
    let staging = dir.path().join(".prepared.preparing");
    let mut child = std::process::Command::new(common::dtml_bin())
        .args(args(&out))
        .env("DTML_LOG", "warn")
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let finished_before_kill = loop {
        let receipts = std::fs::read_dir(staging.join("cases")).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".receipt.json"))
            })
            .count()
        });
        if receipts >= 4 {
            break receipts;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "prepare finished before it could be killed"
        );
        assert!(start.elapsed().as_secs() < 300);
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.join("manifest.json").exists(),
        "no half cache under --out"
    );
    // Cases with a receipt at the kill (the receipt follows its case file).
    let staged = case_stamps(&staging);
    let receipted: Vec<_> = staged
        .iter()
        .filter(|(n, _)| staging.join(format!("cases/{n}.receipt.json")).is_file())
        .collect();
    assert!(receipted.len() >= finished_before_kill && receipted.len() < 40);

    let resumed: Vec<String> = args(&out);
    dtml_ok(&resumed.iter().map(String::as_str).collect::<Vec<_>>());
    let published = case_stamps(&out);
    assert_eq!(published.len(), 40);
    for (name, stamp) in receipted {
        assert_eq!(
            published.get(name),
            Some(stamp),
            "{name} was prepared again"
        );
    }
    assert!(!staging.exists());
    // The same cache as one uninterrupted prepare.
    let clean = dir.path().join("clean");
    dtml_ok(&args(&clean).iter().map(String::as_str).collect::<Vec<_>>());
    let manifest = |p: &std::path::Path| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("manifest.json")).unwrap())
                .unwrap();
        v["cases"].take()
    };
    assert_eq!(manifest(&out), manifest(&clean));
    for name in published.keys() {
        assert!(
            std::fs::read(out.join("cases").join(name)).unwrap()
                == std::fs::read(clean.join("cases").join(name)).unwrap(),
            "{name} differs from a clean prepare"
        );
    }
}
