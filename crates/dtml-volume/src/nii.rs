//! NIfTI-1 reading (`.nii`, `.nii.gz`, `.hdr`/`.img`, optionally gzipped)
//! and writing (`.nii`, `.nii.gz`) with the source geometry kept.

use crate::atomic::write_atomic;
use crate::axes::Xyz;
use crate::confine;
use crate::error::{Result, VolumeError};
use crate::geometry::{Geometry, NiftiGeometry};
use crate::volume::{DataType, Volume, VoxelData};
use flate2::read::MultiGzDecoder;
use nifti::NiftiHeader;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const FORMAT: &str = "NIfTI-1";
const HEADER_SIZE: usize = 348;
/// Header plus the 4-byte extension flag: where data starts in a `.nii` we write.
const SINGLE_FILE_OFFSET: usize = 352;

/// How to read a file whose data has more than three dimensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Which 3D volume of a 4D (or higher) file to take; without it such a
    /// file is an error, since silently taking the first channel of a
    /// multi-modal scan would train on the wrong data.
    pub channel: Option<usize>,
}

fn format_err(path: &Path, reason: impl Into<String>) -> VolumeError {
    VolumeError::format(path, FORMAT, reason)
}

fn unsupported(path: &Path, reason: impl Into<String>) -> VolumeError {
    VolumeError::unsupported(path, FORMAT, reason)
}

/// Reads the first [`HEADER_SIZE`] bytes of a (maybe gzipped) header file,
/// decompressing only what they need: the file's size says nothing about
/// its header, so it bounds nothing here (a real scan's `.nii.gz` holds
/// megabytes after its 348 header bytes).
fn read_header_bytes(path: &Path) -> Result<Vec<u8>> {
    confine::regular_file(path, "NIfTI file", path)?;
    let file = std::fs::File::open(path).map_err(|e| VolumeError::io(path, e))?;
    let mut out = Vec::with_capacity(HEADER_SIZE);
    if is_gz(path) {
        let mut magic = [0u8; 2];
        let mut reader = std::io::BufReader::new(file);
        let got = reader
            .read(&mut magic)
            .map_err(|e| VolumeError::io(path, e))?;
        if got < 2 || magic != [0x1f, 0x8b] {
            return Err(not_gzip(path));
        }
        MultiGzDecoder::new(std::io::Cursor::new(magic).chain(reader))
            .take(HEADER_SIZE as u64)
            .read_to_end(&mut out)
            .map_err(|e| corrupt_gzip(path, e))?;
    } else {
        file.take(HEADER_SIZE as u64)
            .read_to_end(&mut out)
            .map_err(|e| VolumeError::io(path, e))?;
    }
    Ok(out)
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().to_ascii_lowercase().ends_with(".gz")
}

fn not_gzip(path: &Path) -> VolumeError {
    VolumeError::format(
        path,
        "gzip",
        "the file name ends in .gz but the content is not gzip (bad magic bytes)",
    )
}

fn corrupt_gzip(path: &Path, e: std::io::Error) -> VolumeError {
    VolumeError::format(
        path,
        "gzip",
        format!("corrupt or truncated gzip stream: {e}"),
    )
}

/// Reads at most `limit` bytes of a file, transparently un-gzipping names
/// ending in `.gz`; the limit is the data size the header declares, so a
/// small corrupt file can never make us allocate more than its header
/// promises.
fn read_maybe_gz(path: &Path, limit: usize) -> Result<Vec<u8>> {
    confine::regular_file(path, "NIfTI file", path)?;
    if is_gz(path) {
        // Deflate needs at least one byte per ~1032 of output, and stores
        // incompressible data with a little overhead: anything far larger
        // than the header's data is not this header's file.
        let most = (limit as u64)
            .saturating_add(limit as u64 / 64)
            .saturating_add(1 << 20);
        let raw = confine::read_bounded(path, most, "gzip file")?;
        if limit > raw.len().saturating_mul(1100).saturating_add(1 << 16) {
            return Err(format_err(
                path,
                format!(
                    "the header promises {limit} bytes but {} bytes of gzip data cannot expand to that many (truncated file or corrupt header)",
                    raw.len()
                ),
            ));
        }
        gunzip(path, &raw, limit)
    } else {
        let file = std::fs::File::open(path).map_err(|e| VolumeError::io(path, e))?;
        let mut out = Vec::new();
        file.take(limit as u64)
            .read_to_end(&mut out)
            .map_err(|e| VolumeError::io(path, e))?;
        Ok(out)
    }
}

fn gunzip(path: &Path, raw: &[u8], limit: usize) -> Result<Vec<u8>> {
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Err(not_gzip(path));
    }
    let mut out = Vec::with_capacity(limit.min(raw.len().saturating_mul(4)));
    MultiGzDecoder::new(raw)
        .take(limit as u64)
        .read_to_end(&mut out)
        .map_err(|e| corrupt_gzip(path, e))?;
    Ok(out)
}

/// Paths of the header and data files for a NIfTI path.
fn header_and_data_paths(path: &Path) -> (PathBuf, Option<PathBuf>) {
    let s = path.to_string_lossy();
    let lower = s.to_ascii_lowercase();
    let swap = |from: &str, to: &str| -> PathBuf {
        let cut = s.len() - from.len();
        PathBuf::from(format!("{}{}", &s[..cut], to))
    };
    let pair = |ext_hdr: &str, ext_img: &str| {
        // Keep the caller's case for the stem, try both cases of the extension.
        [ext_img.to_string(), ext_img.to_ascii_uppercase()]
            .into_iter()
            .map(|e| swap(ext_hdr, &e))
            .find(|p| p.exists())
            .unwrap_or_else(|| swap(ext_hdr, ext_img))
    };
    if lower.ends_with(".hdr.gz") {
        (path.to_path_buf(), Some(pair(".hdr.gz", ".img.gz")))
    } else if lower.ends_with(".hdr") {
        (path.to_path_buf(), Some(pair(".hdr", ".img")))
    } else if lower.ends_with(".img.gz") {
        let hdr = [".hdr.gz", ".HDR.GZ"]
            .iter()
            .map(|e| swap(".img.gz", e))
            .find(|p| p.exists())
            .unwrap_or_else(|| swap(".img.gz", ".hdr.gz"));
        (hdr, Some(path.to_path_buf()))
    } else if lower.ends_with(".img") {
        let hdr = [".hdr", ".HDR"]
            .iter()
            .map(|e| swap(".img", e))
            .find(|p| p.exists())
            .unwrap_or_else(|| swap(".img", ".hdr"));
        (hdr, Some(path.to_path_buf()))
    } else {
        (path.to_path_buf(), None)
    }
}

/// Reads a NIfTI-1 volume. See [`ReadOptions`] for 4D files.
pub fn read_nifti(path: &Path, options: ReadOptions) -> Result<Volume> {
    let (hdr_path, img_path) = header_and_data_paths(path);
    let hdr_bytes = read_header_bytes(&hdr_path)?;
    let header = parse_header(&hdr_path, &hdr_bytes)?;
    let paired = img_path.is_some();
    if paired && &header.magic != b"ni1\0" {
        return Err(format_err(
            &hdr_path,
            "header of a .hdr/.img pair must carry the magic \"ni1\" (ANALYZE 7.5 is not supported)",
        ));
    }
    if !paired && &header.magic != b"n+1\0" {
        return Err(format_err(
            &hdr_path,
            "a single-file .nii must carry the magic \"n+1\"; \"ni1\" means the data lives in a separate .img file",
        ));
    }
    let layout = DataLayout::of(&hdr_path, &header, paired, options)?;
    let needed = layout.offset.saturating_add(layout.total);
    let data_path = img_path.unwrap_or_else(|| hdr_path.clone());
    let data_bytes = read_maybe_gz(&data_path, needed)?;
    decode(&data_path, &header, &layout, &data_bytes)
}

/// Where and what the voxel data are, from the header alone.
struct DataLayout {
    dims: Vec<usize>,
    shape: Xyz<usize>,
    channel: usize,
    dtype: DataType,
    offset: usize,
    /// Bytes of all volumes together.
    total: usize,
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<NiftiHeader> {
    if bytes.len() < HEADER_SIZE {
        return Err(format_err(
            path,
            format!(
                "file holds {} bytes, shorter than the {HEADER_SIZE}-byte NIfTI-1 header",
                bytes.len()
            ),
        ));
    }
    let first = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if first == 540 || first.swap_bytes() == 540 {
        return Err(unsupported(
            path,
            "NIfTI-2 headers (sizeof_hdr 540) are not supported; convert to NIfTI-1",
        ));
    }
    // The reader guesses the byte order from dim[0]; one outside 1..=7
    // would be reported as a byte-swapped sizeof_hdr, so name it first.
    let dim0 = match first {
        348 => Some(i16::from_le_bytes([bytes[40], bytes[41]])),
        f if f.swap_bytes() == 348 => Some(i16::from_be_bytes([bytes[40], bytes[41]])),
        _ => None,
    };
    if let Some(d) = dim0.filter(|d| !(1..=7).contains(d)) {
        return Err(format_err(
            path,
            format!("dim[0] = {d} must be between 1 and 7 (number of dimensions)"),
        ));
    }
    let header = NiftiHeader::from_reader(&bytes[..HEADER_SIZE]).map_err(|e| match e {
        nifti::NiftiError::InvalidFormat => format_err(
            path,
            format!(
                "wrong magic {:?} at byte 344 (expected \"n+1\" or \"ni1\")",
                String::from_utf8_lossy(&bytes[344..348])
            ),
        ),
        other => format_err(path, other.to_string()),
    })?;
    if header.sizeof_hdr != HEADER_SIZE as i32 {
        return Err(format_err(
            path,
            format!("sizeof_hdr is {} (expected 348)", header.sizeof_hdr),
        ));
    }
    Ok(header)
}

impl DataLayout {
    fn of(
        hdr_path: &Path,
        h: &NiftiHeader,
        paired: bool,
        options: ReadOptions,
    ) -> Result<DataLayout> {
        let ndim = h.dim[0] as usize;
        if !(1..=7).contains(&ndim) {
            return Err(format_err(
                hdr_path,
                format!("dim[0] = {} must be between 1 and 7", h.dim[0]),
            ));
        }
        // dim[] are signed 16-bit in the standard (the reader hands them
        // over as u16): a negative size is corruption, not 65520.
        if let Some(a) = h.dim[1..=ndim].iter().position(|&d| (d as i16) < 0) {
            return Err(format_err(
                hdr_path,
                format!(
                    "dim[{}] = {} is negative: corrupt header",
                    a + 1,
                    h.dim[a + 1] as i16
                ),
            ));
        }
        let dims: Vec<usize> = h.dim[1..=ndim].iter().map(|&d| d as usize).collect();
        if let Some(a) = dims.iter().position(|&d| d == 0) {
            return Err(format_err(
                hdr_path,
                format!("dim[{}] is 0: empty or corrupt header", a + 1),
            ));
        }
        let mut shape = [1usize; 3];
        for (a, s) in shape.iter_mut().enumerate().take(ndim.min(3)) {
            *s = dims[a];
        }
        let shape = Xyz::from_xyz(shape);
        let volumes: usize = dims.iter().skip(3).product();
        let channel = match (volumes, options.channel) {
            (1, None) | (1, Some(0)) => 0,
            (n, None) => {
                return Err(unsupported(
                    hdr_path,
                    format!(
                        "the file is {ndim}D with {n} volumes of {}x{}x{} (dims {dims:?}); choose one with a channel option",
                        shape[0], shape[1], shape[2]
                    ),
                ));
            }
            (n, Some(c)) if c >= n => {
                return Err(VolumeError::invalid(
                    hdr_path,
                    format!(
                        "channel {c} requested but the file holds {n} volumes (0..{})",
                        n - 1
                    ),
                ));
            }
            (_, Some(c)) => c,
        };
        let dtype = DataType::from_nifti_code(h.datatype).ok_or_else(|| {
        unsupported(
            hdr_path,
            format!(
                "datatype code {} (supported: uint8, int8, int16, uint16, int32, uint32, float32, float64)",
                h.datatype
            ),
        )
    })?;
        let offset = if paired {
            data_offset(hdr_path, h.vox_offset, 0)?
        } else {
            data_offset(hdr_path, h.vox_offset, SINGLE_FILE_OFFSET)?
        };
        let nvox = shape.voxels();
        let total = nvox
            .checked_mul(volumes)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| {
                format_err(
                    hdr_path,
                    format!("dims {dims:?} overflow the address space"),
                )
            })?;
        confine::check_voxels(hdr_path, &dims, dtype.size())?;
        Ok(DataLayout {
            dims,
            shape,
            channel,
            dtype,
            offset,
            total,
        })
    }
}

fn decode(data_path: &Path, h: &NiftiHeader, layout: &DataLayout, bytes: &[u8]) -> Result<Volume> {
    let DataLayout {
        ref dims,
        shape,
        channel,
        dtype,
        offset,
        total,
    } = *layout;
    let nvox = shape.voxels();
    let available = bytes.len().saturating_sub(offset);
    if available < total {
        return Err(format_err(
            data_path,
            format!(
                "header dims {dims:?} of {:?} need {total} bytes of data at offset {offset}, but only {available} are there (truncated file or wrong header)",
                dtype
            ),
        ));
    }
    let start = offset + channel * nvox * dtype.size();
    let raw = &bytes[start..start + nvox * dtype.size()];
    let big = h.endianness == nifti::Endianness::Big;
    let data = decode_raw(raw, dtype, big);
    let data = apply_scaling(data, h.scl_slope, h.scl_inter);
    let header = NiftiGeometry {
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        quatern: [h.quatern_b, h.quatern_c, h.quatern_d],
        qoffset: [h.quatern_x, h.quatern_y, h.quatern_z],
        pixdim: h.pixdim,
        srow: [h.srow_x, h.srow_y, h.srow_z],
        xyzt_units: h.xyzt_units,
        dim_info: h.dim_info,
    };
    let geometry = Geometry::from_header(header, shape);
    Ok(Volume {
        data,
        shape,
        geometry,
    })
}

fn data_offset(path: &Path, vox_offset: f32, minimum: usize) -> Result<usize> {
    if !vox_offset.is_finite() || vox_offset < 0.0 || vox_offset.fract() != 0.0 || vox_offset > 1e12
    {
        return Err(format_err(
            path,
            format!("vox_offset {vox_offset} is not a valid byte offset"),
        ));
    }
    let v = vox_offset as usize;
    if v < minimum {
        // nibabel reads such files from the end of the header; so do we.
        tracing::warn!(
            "{}: vox_offset {v} lies inside the header; reading data from byte {minimum}",
            path.display()
        );
        return Ok(minimum);
    }
    Ok(v)
}

/// Decodes raw bytes of one type and byte order into typed voxels.
pub(crate) fn decode_raw(raw: &[u8], dtype: DataType, big_endian: bool) -> VoxelData {
    macro_rules! conv {
        ($t:ty, $n:expr, $variant:ident) => {{
            let v: Vec<$t> = raw
                .chunks_exact($n)
                .map(|c| {
                    let arr: [u8; $n] = c.try_into().expect("chunk size");
                    if big_endian {
                        <$t>::from_be_bytes(arr)
                    } else {
                        <$t>::from_le_bytes(arr)
                    }
                })
                .collect();
            VoxelData::$variant(v)
        }};
    }
    match dtype {
        DataType::U8 => VoxelData::U8(raw.to_vec()),
        DataType::I8 => VoxelData::I8(raw.iter().map(|&b| b as i8).collect()),
        DataType::I16 => conv!(i16, 2, I16),
        DataType::U16 => conv!(u16, 2, U16),
        DataType::I32 => conv!(i32, 4, I32),
        DataType::U32 => conv!(u32, 4, U32),
        DataType::F32 => conv!(f32, 4, F32),
        DataType::F64 => conv!(f64, 8, F64),
    }
}

/// Applies `scl_slope`/`scl_inter` as nibabel does: a slope of 0 or a
/// non-finite slope or intercept means "no scaling"; (1, 0) is identity.
/// Scaled data become f64, as nibabel returns them.
fn apply_scaling(data: VoxelData, slope: f32, inter: f32) -> VoxelData {
    if slope == 0.0 || !slope.is_finite() || !inter.is_finite() || (slope == 1.0 && inter == 0.0) {
        return data;
    }
    let (s, i) = (slope as f64, inter as f64);
    VoxelData::F64(data.to_f64().into_iter().map(|v| v * s + i).collect())
}

/// The mark [`write_nifti`] puts in the header's `descrip`.
const DESCRIP: &[u8] = b"dtml";
/// Offset of `descrip` in a NIfTI-1 header.
const DESCRIP_OFFSET: usize = 148;

/// Whether `path` is a NIfTI file dtml wrote (its header's `descrip` says
/// so): the files dtml may replace.
pub fn written_by_dtml(path: &Path) -> bool {
    read_header_bytes(path).is_ok_and(|h| {
        h.len() >= HEADER_SIZE
            && h[DESCRIP_OFFSET..DESCRIP_OFFSET + 80]
                .split(|&b| b == 0)
                .next()
                == Some(DESCRIP)
    })
}

/// Writes a volume as NIfTI-1 (`.nii`, or gzipped `.nii.gz`), atomically,
/// with the volume's own element type and header geometry.
pub fn write_nifti(path: &Path, volume: &Volume) -> Result<()> {
    let lower = path.to_string_lossy().to_ascii_lowercase();
    let gz = if lower.ends_with(".nii.gz") {
        true
    } else if lower.ends_with(".nii") {
        false
    } else {
        return Err(VolumeError::invalid(
            path,
            "NIfTI output must end in .nii or .nii.gz",
        ));
    };
    if volume.shape.any(|d| d > i16::MAX as usize) {
        return Err(VolumeError::invalid(
            path,
            format!(
                "a NIfTI-1 header holds at most {} voxels per axis; the volume has {:?}",
                i16::MAX,
                volume.shape
            ),
        ));
    }
    let mut bytes =
        Vec::with_capacity(SINGLE_FILE_OFFSET + volume.len() * volume.data.dtype().size());
    bytes.extend_from_slice(&header_bytes(volume));
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(&volume.data.to_le_bytes());
    write_atomic(path, |w| {
        if gz {
            let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
            enc.write_all(&bytes)?;
            enc.finish()?;
            Ok(())
        } else {
            w.write_all(&bytes)
        }
    })
}

/// Writes a binary mask (u8, values 0/1) on a volume's grid and geometry.
pub fn write_mask(path: &Path, mask: Vec<u8>, like: &Volume) -> Result<()> {
    let vol = Volume::new(VoxelData::U8(mask), like.shape, like.geometry.clone())
        .map_err(|_| VolumeError::invalid(path, "mask size does not match the reference volume"))?;
    write_nifti(path, &vol)
}

/// The 348 header bytes (little-endian) for a volume.
fn header_bytes(v: &Volume) -> Vec<u8> {
    let g = &v.geometry.header;
    let dtype = v.data.dtype();
    let mut b = Vec::with_capacity(HEADER_SIZE);
    let i32le = |b: &mut Vec<u8>, x: i32| b.extend_from_slice(&x.to_le_bytes());
    let i16le = |b: &mut Vec<u8>, x: i16| b.extend_from_slice(&x.to_le_bytes());
    let f32le = |b: &mut Vec<u8>, x: f32| b.extend_from_slice(&x.to_le_bytes());
    i32le(&mut b, HEADER_SIZE as i32);
    b.extend_from_slice(&[0u8; 10]); // data_type
    b.extend_from_slice(&[0u8; 18]); // db_name
    i32le(&mut b, 0); // extents
    i16le(&mut b, 0); // session_error
    b.push(b'r'); // regular
    b.push(g.dim_info);
    let dims = [
        3i16,
        v.shape[0] as i16,
        v.shape[1] as i16,
        v.shape[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for d in dims {
        i16le(&mut b, d);
    }
    for _ in 0..3 {
        f32le(&mut b, 0.0); // intent_p1..3
    }
    i16le(&mut b, 0); // intent_code
    i16le(&mut b, dtype.nifti_code());
    i16le(&mut b, (dtype.size() * 8) as i16);
    i16le(&mut b, 0); // slice_start
    let mut pixdim = g.pixdim;
    if pixdim[0] != -1.0 {
        pixdim[0] = 1.0;
    }
    for p in pixdim {
        f32le(&mut b, p);
    }
    f32le(&mut b, SINGLE_FILE_OFFSET as f32);
    f32le(&mut b, 1.0); // scl_slope: data are written as their values
    f32le(&mut b, 0.0); // scl_inter
    i16le(&mut b, 0); // slice_end
    b.push(0); // slice_code
    b.push(g.xyzt_units);
    f32le(&mut b, 0.0); // cal_max
    f32le(&mut b, 0.0); // cal_min
    f32le(&mut b, 0.0); // slice_duration
    f32le(&mut b, 0.0); // toffset
    i32le(&mut b, 0); // glmax
    i32le(&mut b, 0); // glmin
    debug_assert_eq!(b.len(), DESCRIP_OFFSET);
    let mut descrip = [0u8; 80];
    descrip[..DESCRIP.len()].copy_from_slice(DESCRIP);
    b.extend_from_slice(&descrip);
    b.extend_from_slice(&[0u8; 24]); // aux_file
    i16le(&mut b, g.qform_code);
    i16le(&mut b, g.sform_code);
    for q in g.quatern {
        f32le(&mut b, q);
    }
    for q in g.qoffset {
        f32le(&mut b, q);
    }
    for row in g.srow {
        for x in row {
            f32le(&mut b, x);
        }
    }
    b.extend_from_slice(&[0u8; 16]); // intent_name
    b.extend_from_slice(b"n+1\0");
    debug_assert_eq!(b.len(), HEADER_SIZE);
    b
}
