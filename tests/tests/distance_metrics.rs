//! `dtml distance` and `dtml metrics` on real files.

mod common;
use common::{dtml_err, dtml_ok, s};
use dtml_volume::{Geometry, Volume, VoxelData, Xyz, read_volume, write_nifti};

const N: usize = 12;

fn cube_mask(lo: usize, hi: usize, value: u8) -> Volume {
    let mut m = vec![0u8; N * N * N];
    for z in lo..hi {
        for y in lo..hi {
            for x in lo..hi {
                m[x + N * (y + N * z)] = value;
            }
        }
    }
    let geometry = Geometry::from_affine([
        [-0.5, 0.0, 0.0, 3.0],
        [0.0, -0.5, 0.0, 2.0],
        [0.0, 0.0, 2.0, 1.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    Volume::new(VoxelData::U8(m), Xyz::new(N, N, N), geometry).unwrap()
}

#[test]
fn distance_maps_keep_geometry_and_sign() {
    let dir = tempfile::tempdir().unwrap();
    let mask = dir.path().join("mask.nii.gz");
    write_nifti(&mask, &cube_mask(3, 9, 255)).unwrap();
    for (flag, name) in [
        ("", "edt.nii.gz"),
        ("--signed", "sdm.nii.gz"),
        ("--normalized", "norm.nii"),
    ] {
        let out = dir.path().join(name);
        let mut args = vec!["distance", "--mask", s(&mask), "--out", s(&out)];
        if !flag.is_empty() {
            args.push(flag);
        }
        dtml_ok(&args);
        let v = read_volume(&out).unwrap();
        assert_eq!(
            v.geometry,
            read_volume(&mask).unwrap().geometry,
            "{name}: header geometry kept"
        );
        let d = match &v.data {
            VoxelData::F32(d) => d.clone(),
            other => panic!("{name}: f32 expected, got {:?}", other.dtype()),
        };
        let centre = d[6 + N * (6 + N * 6)];
        let corner = d[0];
        match flag {
            // Centre of the cube: 3 voxels to the background along x/y (0.5 mm) -> 1.5 mm.
            "" => assert!(
                (centre - 1.5).abs() < 1e-6 && corner == 0.0,
                "{centre} {corner}"
            ),
            "--signed" => assert!(centre < 0.0 && corner > 0.0),
            _ => assert!(
                (-1.0..0.0).contains(&centre) && corner == 1.0,
                "{centre} {corner}"
            ),
        }
    }
}

#[test]
fn metrics_match_by_name_and_report_empty_cases() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, refs) = (dir.path().join("pred"), dir.path().join("ref"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&refs).unwrap();
    write_nifti(&refs.join("a.nii.gz"), &cube_mask(3, 9, 1)).unwrap();
    write_nifti(&pred.join("a.nii.gz"), &cube_mask(3, 9, 1)).unwrap();
    write_nifti(&refs.join("b.nii.gz"), &cube_mask(3, 9, 1)).unwrap();
    write_nifti(&pred.join("b.nii"), &cube_mask(0, 0, 1)).unwrap();
    let j: serde_json::Value = serde_json::from_str(&dtml_ok(&[
        "metrics",
        "--pred",
        s(&pred),
        "--ref",
        s(&refs),
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["units"], "mm");
    assert_eq!(j["cases"][0]["case"], "a");
    assert_eq!(j["cases"][0]["dice"], 1.0);
    assert_eq!(j["cases"][0]["hd95"], 0.0);
    assert_eq!(j["cases"][1]["status"], "empty prediction");
    assert_eq!(j["cases"][1]["dice"], 0.0);
    assert_eq!(j["summary"]["dice"]["mean"], 0.5);
    assert_eq!(j["summary"]["hd95"]["n"], 1);
    assert_eq!(j["summary"]["empty_prediction"], 1);
    let r: serde_json::Value = serde_json::from_str(&dtml_ok(&[
        "metrics",
        "--pred",
        s(&pred),
        "--ref",
        s(&refs),
        "--json",
        "--reference-scoring",
        "--voxels",
    ]))
    .unwrap();
    assert_eq!(r["summary"]["hd95"]["n"], 2);
    assert_eq!(r["units"], "voxels");
    let table = dtml_ok(&["metrics", "--pred", s(&pred), "--ref", s(&refs)]);
    assert!(
        table.contains("empty prediction") && table.contains("mean"),
        "{table}"
    );
    // A reference without a prediction is an error naming it.
    write_nifti(&refs.join("c.nii.gz"), &cube_mask(3, 9, 1)).unwrap();
    let err = dtml_err(&["metrics", "--pred", s(&pred), "--ref", s(&refs)]);
    assert!(err.contains("\"c\""), "{err}");
}

#[test]
fn metrics_add_the_surface_dice_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, refs) = (dir.path().join("pred"), dir.path().join("ref"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&refs).unwrap();
    let (p, r) = (cube_mask(4, 10, 1), cube_mask(3, 9, 1));
    write_nifti(&refs.join("a.nii.gz"), &r).unwrap();
    write_nifti(&pred.join("a.nii.gz"), &p).unwrap();
    write_nifti(&refs.join("b.nii.gz"), &r).unwrap();
    write_nifti(&pred.join("b.nii.gz"), &cube_mask(0, 0, 1)).unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec!["metrics", "--pred", s(&pred), "--ref", s(&refs)];
        a.extend_from_slice(extra);
        dtml_ok(&a)
    };
    let j: serde_json::Value =
        serde_json::from_str(&args(&["--json", "--surface-dice", "0.6"])).unwrap();
    // The file's spacing is (0.5, 0.5, 2) mm in (x, y, z).
    let mask = |v: &Volume| match &v.data {
        VoxelData::U8(m) => m.clone(),
        _ => unreachable!(),
    };
    let want = dtml_edt::surface_dice(&mask(&p), &mask(&r), &[N, N, N], &[2.0, 0.5, 0.5], 0.6)
        .unwrap()
        .unwrap();
    assert!(want > 0.2 && want < 1.0, "{want}");
    assert_eq!(j["surface_dice_tolerance"], 0.6);
    assert_eq!(j["cases"][0]["surface_dice"], want);
    assert_eq!(j["cases"][1]["surface_dice"], 0.0);
    assert_eq!(j["summary"]["surface_dice"]["n"], 2);
    // In voxels the tolerance is in voxels: one voxel's shift is within 1.
    let v: serde_json::Value =
        serde_json::from_str(&args(&["--json", "--voxels", "--surface-dice", "1"])).unwrap();
    assert!(v["cases"][0]["surface_dice"].as_f64().unwrap() > want);
    let table = args(&["--surface-dice", "0.6"]);
    assert!(table.contains("sdice@0.6mm"), "{table}");
    // Without the flag there is no such column or key.
    let plain: serde_json::Value = serde_json::from_str(&args(&["--json"])).unwrap();
    assert!(plain["cases"][0].get("surface_dice").is_none());
    assert!(!args(&[]).contains("sdice"));
    let err = dtml_err(&[
        "metrics",
        "--pred",
        s(&pred),
        "--ref",
        s(&refs),
        "--surface-dice=-1",
    ]);
    assert!(err.contains("tolerance"), "{err}");
}
