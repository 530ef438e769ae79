//! The LA challenge layout: a folder per case with `lgemri.nrrd` and
//! `laendo.nrrd` (255 = left atrium), optional `train.list` / `test.list`.

use dtml_volume::dataset::{self, OpenOptions};
use dtml_volume::{
    Dataset, LabelledSpec, Layout, PrepareOptions, PreparedDataset, Role, Xyz, prepare, read_volume,
};
use std::io::Write;
use std::path::Path;

const SHAPE: [usize; 3] = [16, 14, 8];

/// An NRRD as ITK writes the LA files: LPS space, gzip, 0.625 mm.
fn write_nrrd(path: &Path, type_name: &str, data: &[u8]) {
    let header = format!(
        "NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\ntype: {type_name}\ndimension: 3\nspace: left-posterior-superior\nsizes: {} {} {}\nspace directions: (0.625,0,0) (0,0.625,0) (0,0,0.625)\nkinds: domain domain domain\nendian: little\nencoding: gzip\nspace origin: (-50.5,-40.25,10)\n\n",
        SHAPE[0], SHAPE[1], SHAPE[2]
    );
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap();
}

fn la_case(root: &Path, id: &str, offset: usize) {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let n: usize = SHAPE.iter().product();
    let mut img = Vec::with_capacity(n * 2);
    let mut lab = vec![0u8; n];
    for z in 0..SHAPE[2] {
        for y in 0..SHAPE[1] {
            for x in 0..SHAPE[0] {
                let inside =
                    (offset..offset + 4).contains(&x) && (4..8).contains(&y) && (2..5).contains(&z);
                let v: i16 = if inside { 300 } else { 50 + (x + y + z) as i16 };
                img.extend(v.to_le_bytes());
                if inside {
                    lab[x + SHAPE[0] * (y + SHAPE[1] * z)] = 255;
                }
            }
        }
    }
    write_nrrd(&dir.join("lgemri.nrrd"), "short", &img);
    write_nrrd(&dir.join("laendo.nrrd"), "unsigned char", &lab);
}

#[test]
fn la_folders_with_lists_prepare_with_foreground_255() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("2018LA_Seg_Training Set");
    for (i, id) in [
        "0RZDK210BSMWAA6467LU",
        "1D7CUD1955YZPGK8XHJX",
        "23X6SY44VT9KFHR7S7OC",
        "3C2QTUNI0852XV7ZH4Q1",
    ]
    .iter()
    .enumerate()
    {
        la_case(&root, id, 3 + i);
    }
    std::fs::write(
        root.join("train.list"),
        "0RZDK210BSMWAA6467LU\n1D7CUD1955YZPGK8XHJX\n23X6SY44VT9KFHR7S7OC\n",
    )
    .unwrap();
    std::fs::write(root.join("test.list"), "3C2QTUNI0852XV7ZH4Q1\n").unwrap();
    let ds = Dataset::open(&root, OpenOptions::default()).unwrap();
    assert_eq!(ds.layout, Layout::La);
    assert_eq!(ds.training.len(), 3);
    assert_eq!(ds.test.len(), 1);
    let split = dataset::split(&ds, &LabelledSpec::Count(2), None, None).unwrap();
    let out = dir.path().join("prep");
    let options = PrepareOptions {
        patch: Xyz::new(8, 8, 8),
        margin: Xyz::new(Some(2), Some(2), None),
        foreground: vec![255],
        ..Default::default()
    };
    prepare(&ds.root, ds.layout, &split, &out, &options, &|_| {}).unwrap();
    let prep = PreparedDataset::open(&out).unwrap();
    assert_eq!(prep.cases(Role::Labelled).count(), 2);
    assert_eq!(prep.cases(Role::Unlabelled).count(), 1);
    assert_eq!(prep.cases(Role::Test).count(), 1);
    for rec in prep.cases(Role::Labelled) {
        assert_eq!(rec.foreground_voxels, Some(4 * 4 * 3));
        let label = prep.load(rec).unwrap().label.unwrap();
        assert_eq!(label.iter().filter(|&&v| v == 1).count(), 48);
    }
    // The NRRD geometry arrives in RAS: LPS x and y negated.
    let v = read_volume(&root.join("0RZDK210BSMWAA6467LU/lgemri.nrrd")).unwrap();
    assert_eq!(v.spacing(), Xyz::splat(0.625));
    assert_eq!(v.affine()[0], [-0.625, 0.0, 0.0, 50.5]);
    assert_eq!(v.affine()[1], [0.0, -0.625, 0.0, 40.25]);
    assert_eq!(v.affine()[2], [0.0, 0.0, 0.625, 10.0]);
    // A list naming a case without a folder is an error naming the list.
    std::fs::write(root.join("test.list"), "NOPE\n").unwrap();
    let e = Dataset::open(&root, OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.list") && e.contains("NOPE"), "{e}");
}
