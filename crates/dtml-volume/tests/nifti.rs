//! NIfTI-1 reading and writing: every data type, byte order, scaling,
//! offsets, file pairs, 4D files, and the bad inputs users hit.

use dtml_volume::{
    Geometry, ReadOptions, Volume, VolumeError, VoxelData, Xyz, read_volume, read_volume_with,
    write_nifti,
};
use std::io::Write;
use std::path::Path;

/// A hand-built NIfTI-1 header, so tests control every field and byte order.
struct RawHeader {
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 6],
    srow: [[f32; 4]; 3],
    magic: [u8; 4],
}

impl RawHeader {
    fn new(shape: &[i16], datatype: i16, bitpix: i16) -> RawHeader {
        let mut dim = [1i16; 8];
        dim[0] = shape.len() as i16;
        dim[1..=shape.len()].copy_from_slice(shape);
        RawHeader {
            dim,
            datatype,
            bitpix,
            pixdim: [1.0, 0.5, 0.75, 2.0, 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 1,
            quatern: [0.0; 6],
            srow: [
                [-0.5, 0.0, 0.0, 10.0],
                [0.0, 0.75, 0.0, -5.0],
                [0.0, 0.0, 2.0, 3.0],
            ],
            magic: *b"n+1\0",
        }
    }

    fn bytes(&self, big: bool) -> Vec<u8> {
        let mut b = Vec::new();
        let i32b = |b: &mut Vec<u8>, v: i32| {
            b.extend(if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        let i16b = |b: &mut Vec<u8>, v: i16| {
            b.extend(if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        let f32b = |b: &mut Vec<u8>, v: f32| {
            b.extend(if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        i32b(&mut b, 348);
        b.extend([0u8; 28]);
        i32b(&mut b, 0);
        i16b(&mut b, 0);
        b.push(b'r');
        b.push(0);
        for d in self.dim {
            i16b(&mut b, d);
        }
        for _ in 0..3 {
            f32b(&mut b, 0.0);
        }
        i16b(&mut b, 0);
        i16b(&mut b, self.datatype);
        i16b(&mut b, self.bitpix);
        i16b(&mut b, 0);
        for p in self.pixdim {
            f32b(&mut b, p);
        }
        f32b(&mut b, self.vox_offset);
        f32b(&mut b, self.scl_slope);
        f32b(&mut b, self.scl_inter);
        i16b(&mut b, 0);
        b.push(0);
        b.push(2);
        for _ in 0..4 {
            f32b(&mut b, 0.0);
        }
        i32b(&mut b, 0);
        i32b(&mut b, 0);
        b.extend([0u8; 80 + 24]);
        i16b(&mut b, self.qform_code);
        i16b(&mut b, self.sform_code);
        for q in self.quatern {
            f32b(&mut b, q);
        }
        for row in self.srow {
            for v in row {
                f32b(&mut b, v);
            }
        }
        b.extend([0u8; 16]);
        b.extend(self.magic);
        assert_eq!(b.len(), 348);
        b
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    if path.to_string_lossy().ends_with(".gz") {
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

fn single_file(h: &RawHeader, data: &[u8], big: bool) -> Vec<u8> {
    let mut b = h.bytes(big);
    b.resize(h.vox_offset.max(352.0) as usize, 0);
    b.extend_from_slice(data);
    b
}

fn sample_data() -> Vec<VoxelData> {
    let n: usize = 2 * 3 * 4;
    vec![
        VoxelData::U8((0..n).map(|i| (i * 10) as u8).collect()),
        VoxelData::I8((0..n).map(|i| i as i8 - 12).collect()),
        VoxelData::I16((0..n).map(|i| i as i16 * -1000).collect()),
        VoxelData::U16((0..n).map(|i| i as u16 * 2000).collect()),
        VoxelData::I32((0..n as i32).map(|i| i * -100_000).collect()),
        VoxelData::U32((0..n).map(|i| i as u32 * 150_000_000).collect()),
        VoxelData::F32((0..n).map(|i| i as f32 * 0.25 - 3.0).collect()),
        VoxelData::F64((0..n).map(|i| i as f64 * 1e-3 + 1e10).collect()),
    ]
}

#[test]
fn every_type_round_trips_through_nii_and_nii_gz() {
    let dir = tempfile::tempdir().unwrap();
    let affine = [
        [-0.7, 0.0, 0.0, 12.0],
        [0.0, -0.7, 0.0, 8.0],
        [0.0, 0.0, 2.5, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for data in sample_data() {
        let vol = Volume::new(
            data.clone(),
            Xyz::new(2, 3, 4),
            Geometry::from_affine(affine),
        )
        .unwrap();
        for ext in ["nii", "nii.gz"] {
            let p = dir.path().join(format!("v_{:?}.{ext}", data.dtype()));
            write_nifti(&p, &vol).unwrap();
            let back = read_volume(&p).unwrap();
            assert_eq!(back.data, data, "{p:?}");
            assert_eq!(back.shape.xyz(), [2, 3, 4]);
            assert_eq!(back.geometry.header, vol.geometry.header);
            for r in 0..4 {
                for c in 0..4 {
                    assert!((back.affine()[r][c] - affine[r][c]).abs() < 1e-5);
                }
            }
        }
    }
}

#[test]
fn big_endian_files_read_like_little_endian() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<i16> = (0..24).map(|i| i * 300 - 2000).collect();
    let h = RawHeader::new(&[2, 3, 4], 4, 16);
    for (big, name) in [(true, "be.nii"), (false, "le.nii")] {
        let data: Vec<u8> = values
            .iter()
            .flat_map(|v| {
                if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            })
            .collect();
        write_file(&dir.path().join(name), &single_file(&h, &data, big));
    }
    let be = read_volume(&dir.path().join("be.nii")).unwrap();
    let le = read_volume(&dir.path().join("le.nii")).unwrap();
    assert_eq!(be.data, VoxelData::I16(values));
    assert_eq!(be, le);
    assert_eq!(be.affine()[0], [-0.5, 0.0, 0.0, 10.0]);
    assert_eq!(be.spacing().xyz(), [0.5, 0.75, 2.0]);
}

#[test]
fn scaling_is_applied_like_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = RawHeader::new(&[2, 2, 2], 4, 16);
    h.scl_slope = 0.5;
    h.scl_inter = -10.0;
    let data: Vec<u8> = (0..8i16).flat_map(|v| v.to_le_bytes()).collect();
    let p = dir.path().join("s.nii.gz");
    write_file(&p, &single_file(&h, &data, false));
    let v = read_volume(&p).unwrap();
    assert_eq!(
        v.data,
        VoxelData::F64((0..8).map(|i| i as f64 * 0.5 - 10.0).collect())
    );
    // slope 0 means "no scaling" and keeps the integer type.
    h.scl_slope = 0.0;
    write_file(&p, &single_file(&h, &data, false));
    assert_eq!(
        read_volume(&p).unwrap().data.dtype(),
        dtml_volume::DataType::I16
    );
}

#[test]
fn vox_offset_beyond_header_and_extensions_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = RawHeader::new(&[2, 2, 1], 2, 8);
    h.vox_offset = 432.0;
    let mut bytes = h.bytes(false);
    bytes.extend([1, 0, 0, 0]); // extension flag set
    bytes.extend(32i32.to_le_bytes()); // esize
    bytes.extend(4i32.to_le_bytes()); // ecode (comment)
    bytes.resize(432, 0xAB);
    bytes.extend([7, 8, 9, 10]);
    let p = dir.path().join("ext.nii");
    write_file(&p, &bytes);
    assert_eq!(
        read_volume(&p).unwrap().data,
        VoxelData::U8(vec![7, 8, 9, 10])
    );
}

#[test]
fn hdr_img_pairs_read_from_either_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = RawHeader::new(&[2, 2, 1], 16, 32);
    h.magic = *b"ni1\0";
    h.vox_offset = 0.0;
    let data: Vec<u8> = [1.5f32, -2.0, 3.25, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_file(&dir.path().join("pair.hdr"), &h.bytes(false));
    write_file(&dir.path().join("pair.img"), &data);
    let a = read_volume(&dir.path().join("pair.hdr")).unwrap();
    let b = read_volume(&dir.path().join("pair.img")).unwrap();
    assert_eq!(a.data, VoxelData::F32(vec![1.5, -2.0, 3.25, 4.0]));
    assert_eq!(a, b);
    // gzipped pair
    write_file(&dir.path().join("gz.hdr.gz"), &h.bytes(false));
    write_file(&dir.path().join("gz.img.gz"), &data);
    assert_eq!(
        read_volume(&dir.path().join("gz.hdr.gz")).unwrap().data,
        a.data
    );
}

#[test]
fn qform_is_used_when_sform_code_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = RawHeader::new(&[2, 2, 2], 2, 8);
    h.sform_code = 0;
    h.qform_code = 1;
    // 180 degrees about z: b=c=0, d=1 -> x and y flipped.
    h.quatern = [0.0, 0.0, 1.0, 5.0, 6.0, 7.0];
    h.pixdim[0] = -1.0;
    let p = dir.path().join("q.nii");
    write_file(&p, &single_file(&h, &[0; 8], false));
    let v = read_volume(&p).unwrap();
    let a = v.affine();
    let want = [
        [-0.5, 0.0, 0.0, 5.0],
        [0.0, -0.75, 0.0, 6.0],
        [0.0, 0.0, -2.0, 7.0],
    ];
    for r in 0..3 {
        for c in 0..4 {
            assert!((a[r][c] - want[r][c]).abs() < 1e-6, "{a:?}");
        }
    }
    // Neither form: nibabel's centred base affine.
    h.qform_code = 0;
    write_file(&p, &single_file(&h, &[0; 8], false));
    let a = read_volume(&p).unwrap().affine();
    assert_eq!(a[0], [-0.5, 0.0, 0.0, 0.25]);
}

#[test]
fn four_d_files_need_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let h = RawHeader::new(&[2, 2, 1, 3], 2, 8);
    let p = dir.path().join("multi.nii.gz");
    write_file(
        &p,
        &single_file(&h, &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3], false),
    );
    let err = read_volume(&p).unwrap_err().to_string();
    assert!(
        err.contains("multi.nii.gz") && err.contains("3 volumes"),
        "{err}"
    );
    let v = read_volume_with(&p, ReadOptions { channel: Some(2) }).unwrap();
    assert_eq!(v.data, VoxelData::U8(vec![3; 4]));
    let err = read_volume_with(&p, ReadOptions { channel: Some(3) })
        .unwrap_err()
        .to_string();
    assert!(err.contains("channel 3"), "{err}");
    // A 4D file with one volume is just 3D.
    let h = RawHeader::new(&[2, 2, 1, 1], 2, 8);
    write_file(&p, &single_file(&h, &[5; 4], false));
    assert_eq!(read_volume(&p).unwrap().shape.xyz(), [2, 2, 1]);
}

fn expect_error(path: &Path, needle: &str) -> VolumeError {
    let e = read_volume(path).expect_err("bad input must fail");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.file_name().unwrap().to_string_lossy().to_string()),
        "error must name the file: {msg}"
    );
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "error {msg:?} should mention {needle:?}"
    );
    e
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = RawHeader::new(&[4, 4, 4], 4, 16);
    let good = single_file(&h, &[0u8; 128], false);

    // Truncated and corrupt gzip.
    let mut gz = Vec::new();
    {
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        e.write_all(&good).unwrap();
        e.finish().unwrap();
    }
    std::fs::write(d.join("trunc.nii.gz"), &gz[..gz.len() / 2]).unwrap();
    expect_error(&d.join("trunc.nii.gz"), "gzip");
    let mut corrupt = gz.clone();
    for b in corrupt.iter_mut().skip(20).take(30) {
        *b ^= 0x5a;
    }
    std::fs::write(d.join("corrupt.nii.gz"), &corrupt).unwrap();
    expect_error(&d.join("corrupt.nii.gz"), "gzip");
    std::fs::write(d.join("plain.nii.gz"), &good).unwrap();
    expect_error(&d.join("plain.nii.gz"), "not gzip");

    // Wrong magic.
    let mut bad = good.clone();
    bad[344..348].copy_from_slice(b"xyz\0");
    std::fs::write(d.join("magic.nii"), &bad).unwrap();
    expect_error(&d.join("magic.nii"), "magic");

    // Dims that need more data than the file holds.
    std::fs::write(d.join("short.nii"), &good[..good.len() - 10]).unwrap();
    expect_error(&d.join("short.nii"), "bytes of data");
    let big = RawHeader::new(&[400, 400, 400], 4, 16);
    std::fs::write(d.join("dims.nii"), single_file(&big, &[0u8; 64], false)).unwrap();
    expect_error(&d.join("dims.nii"), "bytes of data");

    // Header shorter than 348 bytes, zero dims, unsupported type, missing file.
    std::fs::write(d.join("tiny.nii"), &good[..100]).unwrap();
    expect_error(&d.join("tiny.nii"), "shorter");
    let zero = RawHeader::new(&[4, 0, 4], 4, 16);
    std::fs::write(d.join("zero.nii"), single_file(&zero, &[0u8; 128], false)).unwrap();
    expect_error(&d.join("zero.nii"), "dim[2] is 0");
    let complex = RawHeader::new(&[2, 2, 2], 32, 64);
    std::fs::write(
        d.join("complex.nii"),
        single_file(&complex, &[0u8; 64], false),
    )
    .unwrap();
    expect_error(&d.join("complex.nii"), "datatype code 32");
    expect_error(&d.join("missing.nii"), "no such file");
    // An .img whose header is missing.
    std::fs::write(d.join("lonely.img"), [0u8; 8]).unwrap();
    let e = read_volume(&d.join("lonely.img")).unwrap_err().to_string();
    assert!(e.contains("lonely.hdr"), "{e}");
    // Unknown extension.
    expect_error(&d.join("scan.mgz"), "extension");
}

#[test]
fn nan_intensities_are_reported_with_the_voxel() {
    let vol = Volume::new(
        VoxelData::F32(vec![0.0, 1.0, f32::NAN, 2.0, 0.0, 0.0, 0.0, 0.0]),
        Xyz::new(2, 2, 2),
        Geometry::from_spacing(Xyz::splat(1.0)),
    )
    .unwrap();
    let e = vol
        .check_segmentable(Path::new("scan.nii"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("scan.nii") && e.contains("(0, 1, 0)") && e.contains("NaN"),
        "{e}"
    );
}

#[test]
fn writing_is_atomic_and_refuses_unknown_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let vol = Volume::new(
        VoxelData::U8(vec![1; 8]),
        Xyz::new(2, 2, 2),
        Geometry::from_spacing(Xyz::splat(1.0)),
    )
    .unwrap();
    assert!(write_nifti(&dir.path().join("x.mha"), &vol).is_err());
    write_nifti(&dir.path().join("ok.nii.gz"), &vol).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file may be left: {names:?}");
}

#[test]
fn writing_refuses_axes_longer_than_the_header_holds() {
    // NIfTI-1 stores dims as int16: 40000 would wrap to a negative size.
    let dir = tempfile::tempdir().unwrap();
    let vol = Volume::new(
        VoxelData::U8(vec![0; 40_000]),
        Xyz::new(40_000, 1, 1),
        Geometry::from_spacing(Xyz::splat(1.0)),
    )
    .unwrap();
    let path = dir.path().join("long.nii");
    let e = write_nifti(&path, &vol).unwrap_err().to_string();
    assert!(e.contains("long.nii") && e.contains("32767"), "{e}");
    assert!(!path.exists());
}
