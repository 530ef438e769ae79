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
