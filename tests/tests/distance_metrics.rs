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
