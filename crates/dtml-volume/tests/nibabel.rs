//! Interop with nibabel, the field's reference NIfTI client: files written
//! by nibabel read identically here, and files written here read
//! identically in nibabel (data, shape, dtype, affine, header codes).

mod common;

use dtml_volume::{
    DataType, Geometry, Volume, VoxelData, Xyz, read_volume, read_volume_with, write_nifti,
};
use serde_json::Value;

const WRITE_WITH_NIBABEL: &str = r#"
import json, sys, numpy as np, nibabel as nib
out = sys.argv[1]
rng = np.random.default_rng(0)
theta = 0.4
rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
aff = np.eye(4); aff[:3, :3] = rot @ np.diag([0.7, 0.9, 2.5]); aff[:3, 3] = [-12.5, 40.0, 7.25]
lps = np.diag([-0.625, -0.625, 0.625, 1.0]); lps[:3, 3] = [100.0, 80.0, -20.0]
cases = []
def save(name, arr, affine, dtype=None, sform=True, qform=True, slope=None):
    img = nib.Nifti1Image(arr, affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    if not sform:
        img.header.set_sform(None, code=0)
    if not qform:
        img.header.set_qform(None, code=0)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    path = f"{out}/{name}"
    nib.save(img, path)
    back = nib.load(path)
    data = np.asanyarray(back.dataobj)
    cases.append(dict(path=path, shape=list(data.shape[:3]), dtype=str(data.dtype),
                      affine=back.affine.tolist(), data=data.ravel(order="F").astype(float).tolist()))
shape = (5, 4, 3)
for dt in ["uint8", "int8", "int16", "uint16", "int32", "uint32", "float32", "float64"]:
    info = np.iinfo(dt) if dt[0] in "iu" else None
    if info is not None:
        arr = rng.integers(max(info.min, -30000), min(info.max, 60000), size=shape).astype(dt)
    else:
        arr = rng.normal(0, 100, size=shape).astype(dt)
    save(f"t_{dt}.nii.gz", arr, aff)
save("lps_u8.nii", (rng.random(shape) > 0.5).astype(np.uint8), lps)
save("qform_only.nii.gz", rng.normal(size=shape).astype(np.float32), aff, sform=False)
save("neither.nii", rng.normal(size=shape).astype(np.float32), aff, sform=False, qform=False)
save("scaled.nii.gz", rng.integers(0, 1000, size=shape).astype(np.int16), aff, slope=(0.25, -3.0))
big = nib.Nifti1Image(rng.normal(size=shape).astype(">f4"), aff)
nib.save(big, f"{out}/big_endian.nii")
data = np.asanyarray(nib.load(f"{out}/big_endian.nii").dataobj)
cases.append(dict(path=f"{out}/big_endian.nii", shape=list(shape), dtype="float32",
                  affine=nib.load(f"{out}/big_endian.nii").affine.tolist(), data=data.ravel(order="F").astype(float).tolist()))
pair = nib.Nifti1Pair(rng.integers(0, 100, size=shape).astype(np.int16), aff)
nib.save(pair, f"{out}/pair.img")
d = np.asanyarray(nib.load(f"{out}/pair.img").dataobj)
cases.append(dict(path=f"{out}/pair.hdr", shape=list(shape), dtype="int16", affine=nib.load(f"{out}/pair.img").affine.tolist(), data=d.ravel(order="F").astype(float).tolist()))
four = rng.integers(0, 9, size=shape + (3,)).astype(np.int16)
nib.save(nib.Nifti1Image(four, aff), f"{out}/four.nii.gz")
cases.append(dict(path=f"{out}/four.nii.gz", channel=2, shape=list(shape), dtype="int16", affine=aff.tolist(), data=four[..., 2].ravel(order="F").astype(float).tolist()))
print(json.dumps(cases))
"#;

const READ_WITH_NIBABEL: &str = r#"
import json, sys, numpy as np, nibabel as nib
res = []
for path in sys.argv[1:]:
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    h = img.header
    res.append(dict(path=path, shape=list(data.shape), dtype=str(data.dtype), affine=img.affine.tolist(),
                    qform_code=int(h["qform_code"]), sform_code=int(h["sform_code"]),
                    qform=h.get_qform().tolist(), units=list(h.get_xyzt_units()),
                    zooms=[float(z) for z in h.get_zooms()], data=data.ravel(order="F").astype(float).tolist()))
print(json.dumps(res))
"#;

fn dtype_name(t: DataType) -> &'static str {
    match t {
        DataType::U8 => "uint8",
        DataType::I8 => "int8",
        DataType::I16 => "int16",
        DataType::U16 => "uint16",
        DataType::I32 => "int32",
        DataType::U32 => "uint32",
        DataType::F32 => "float32",
        DataType::F64 => "float64",
    }
}

fn assert_affine(got: &[[f64; 4]; 4], want: &Value, tol: f64, what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            let w = want[r][c].as_f64().unwrap();
            assert!(
                (got[r][c] - w).abs() <= tol,
                "{what}: affine[{r}][{c}] = {} vs nibabel {w}\n{got:?}\n{want}",
                got[r][c]
            );
        }
    }
}

fn assert_data(got: &VoxelData, want: &Value, what: &str) {
    let want: Vec<f64> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got = got.to_f64();
    assert_eq!(got.len(), want.len(), "{what}: voxel count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "{what}: voxel {i}: {g} vs nibabel {w}"
        );
    }
}

#[test]
fn files_written_by_nibabel_read_identically() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_python(&py, WRITE_WITH_NIBABEL, &[dir.path()]);
    let cases: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(cases.len() >= 14);
    for c in &cases {
        let path = std::path::PathBuf::from(c["path"].as_str().unwrap());
        let channel = c.get("channel").and_then(Value::as_u64).map(|v| v as usize);
        let v = read_volume_with(&path, dtml_volume::ReadOptions { channel })
            .unwrap_or_else(|e| panic!("{e}"));
        let what = path.display().to_string();
        let shape: Vec<usize> = c["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(v.shape.xyz().to_vec(), shape, "{what}");
        assert_eq!(
            dtype_name(v.data.dtype()),
            c["dtype"].as_str().unwrap(),
            "{what}"
        );
        assert_affine(&v.affine(), &c["affine"], 1e-5, &what);
        assert_data(&v.data, &c["data"], &what);
    }
}

#[test]
fn files_written_here_read_identically_in_nibabel() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (0.3f64.sin(), 0.3f64.cos());
    let affine = [
        [c * 0.8, -s * 0.8, 0.0, 5.0],
        [s * 0.8, c * 0.8, 0.0, -7.0],
        [0.0, 0.0, -2.0, 11.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let n: usize = 4 * 3 * 2;
    let datas = [
        VoxelData::U8((0..n).map(|i| i as u8).collect()),
        VoxelData::I8((0..n).map(|i| i as i8 - 10).collect()),
        VoxelData::I16((0..n).map(|i| i as i16 * -77).collect()),
        VoxelData::U16((0..n).map(|i| i as u16 * 999).collect()),
        VoxelData::I32((0..n as i32).map(|i| i * -70_000).collect()),
        VoxelData::U32((0..n).map(|i| i as u32 * 100_000_000).collect()),
        VoxelData::F32((0..n).map(|i| i as f32 / 3.0).collect()),
        VoxelData::F64((0..n).map(|i| i as f64 / 7.0).collect()),
    ];
    let mut paths = Vec::new();
    let mut vols = Vec::new();
    for (i, d) in datas.into_iter().enumerate() {
        let vol = Volume::new(d, Xyz::new(4, 3, 2), Geometry::from_affine(affine)).unwrap();
        let p = dir.path().join(format!(
            "ours_{i}.{}",
            if i % 2 == 0 { "nii.gz" } else { "nii" }
        ));
        write_nifti(&p, &vol).unwrap();
        paths.push(p);
        vols.push(vol);
    }
    let args: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let res: Vec<Value> =
        serde_json::from_str(&common::run_python(&py, READ_WITH_NIBABEL, &args)).unwrap();
    for (r, vol) in res.iter().zip(&vols) {
        let what = r["path"].as_str().unwrap().to_string();
        assert_eq!(r["shape"], serde_json::json!([4, 3, 2]), "{what}");
        assert_eq!(
            r["dtype"].as_str().unwrap(),
            dtype_name(vol.data.dtype()),
            "{what}"
        );
        assert_affine(&affine, &r["affine"], 1e-5, &what);
        assert_affine(&affine, &r["qform"], 1e-5, &format!("{what} qform"));
        assert_eq!(r["qform_code"], 1, "{what}");
        assert_eq!(r["sform_code"], 1, "{what}");
        assert_eq!(r["units"][0], "mm", "{what}");
        assert_data(&vol.data, &r["data"], &what);
    }
}

#[test]
fn a_mask_written_on_a_nibabel_scan_keeps_its_header_geometry() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_python(&py, WRITE_WITH_NIBABEL, &[dir.path()]);
    let cases: Vec<Value> = serde_json::from_str(&out).unwrap();
    let scans = [
        "qform_only.nii.gz",
        "neither.nii",
        "t_int16.nii.gz",
        "lps_u8.nii",
    ];
    let mut masks = Vec::new();
    for name in scans {
        let scan = read_volume(&dir.path().join(name)).unwrap();
        let mask: Vec<u8> = (0..scan.len()).map(|i| (i % 3 == 0) as u8).collect();
        let p = dir.path().join(format!("mask_{name}"));
        dtml_volume::write_mask(&p, mask, &scan).unwrap();
        masks.push(p);
    }
    let args: Vec<&std::path::Path> = masks.iter().map(|p| p.as_path()).collect();
    let res: Vec<Value> =
        serde_json::from_str(&common::run_python(&py, READ_WITH_NIBABEL, &args)).unwrap();
    for (r, name) in res.iter().zip(scans) {
        let src = cases
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(name))
            .unwrap();
        assert_eq!(r["dtype"], "uint8");
        let want: Vec<[f64; 4]> = (0..4)
            .map(|i| std::array::from_fn(|j| src["affine"][i][j].as_f64().unwrap()))
            .collect();
        let want: [[f64; 4]; 4] = want.try_into().unwrap();
        assert_affine(&want, &r["affine"], 1e-5, name);
    }
}
