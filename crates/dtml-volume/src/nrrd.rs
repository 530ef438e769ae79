//! NRRD reading: `.nrrd` with attached data and `.nhdr` with a single
//! detached data file, as written by ITK (the LA challenge's `lgemri.nrrd`
//! and `laendo.nrrd`), teem and pynrrd.
//!
//! Supported: magics `NRRD0001`..`NRRD0005`; every NRRD spelling of the
//! 8/16/32-bit integer types, `float` and `double`; encodings `raw`,
//! `gzip` (`gz`) and `ascii` (`text`, `txt`); `endian`; `byte skip`
//! (including -1 for raw data); `line skip`; `data file` naming one file
//! relative to the header. A volume has dimension 3, or 2 (read as one
//! slice, `nz = 1`), or up to 4 when the extra axes are non-spatial with a
//! single sample (a leading `list` axis of size 1, say).
//!
//! Geometry: `space directions` and `space origin` are in the file's
//! `space` and are converted to RAS+ for the NIfTI-style affine
//! (`left-posterior-superior` negates the first two world axes,
//! `left-anterior-superior` the first; `right-anterior-superior`,
//! `3D-right-handed` and a bare `space dimension` are taken as RAS). The
//! affine's columns are the spatial axes' directions and its translation is
//! the origin. A file without a space has per-axis `spacings` (NaN, zero or
//! missing read as 1 mm), an axis-aligned affine and the origin at 0; a file
//! with a space but no `space directions` takes its axes along the space's
//! axes, scaled by `spacings`, and converted like directions. Which axes are
//! spatial comes from `space directions` (`none` marks the others), else
//! from `kinds`, else a 4D file's first axis is taken as non-spatial.
//! `.nhdr` names a header whose data are in a separate file.
//!
//! Every malformed input is a [`VolumeError`] naming the file; data lengths
//! are checked against `sizes` before any voxel buffer is allocated.

use crate::confine;
use crate::error::{Result, VolumeError};
use crate::geometry::{Affine, Geometry, identity};
use crate::nii::decode_raw;
use crate::volume::{DataType, Volume, VoxelData};
use flate2::read::MultiGzDecoder;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const FORMAT: &str = "NRRD";

/// Deflate expands data at most about 1032:1; a `sizes` asking for more
/// bytes than a gzip stream of the given length can hold is rejected
/// before decompressing.
const MAX_GZIP_RATIO: usize = 1100;

/// Fields this reader interprets (names normalised: lower case, no spaces).
/// Other fields (`content`, `centers`, `units`, `min`, ...) are ignored.
const KNOWN_FIELDS: &[&str] = &[
    "type",
    "dimension",
    "sizes",
    "encoding",
    "endian",
    "byteskip",
    "lineskip",
    "datafile",
    "space",
    "spacedimension",
    "spacedirections",
    "spaceorigin",
    "spacings",
    "kinds",
];

fn format_err(path: &Path, reason: impl Into<String>) -> VolumeError {
    VolumeError::Format {
        path: path.to_path_buf(),
        format: FORMAT,
        reason: reason.into(),
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> VolumeError {
    VolumeError::Unsupported {
        path: path.to_path_buf(),
        format: FORMAT,
        reason: reason.into(),
    }
}

/// Reads an NRRD volume (see the module documentation for what is
/// supported).
pub fn read_nrrd(path: &Path) -> Result<Volume> {
    // No header plus data can use more than the largest volume allowed,
    // 8 bytes a sample, plus room for the header and encodings' overhead.
    let most = (confine::max_voxels()? as u64)
        .saturating_mul(8)
        .saturating_add(1 << 20);
    let bytes = confine::read_bounded(path, most, "NRRD file")?;
    let header = parse_header(path, &bytes)?;
    let layout = Layout::from_header(path, &header)?;

    // The bytes holding the (possibly encoded) data, before line skip.
    let detached;
    let (region, data_name): (&[u8], Option<PathBuf>) = match &layout.data_file {
        Some(file) => {
            detached = confine::read_bounded(file, layout.most_stored_bytes(), "data file")
                .map_err(|e| match e {
                    VolumeError::Io { error, .. } => VolumeError::invalid(
                        path,
                        format!("cannot read its data file {}: {error}", file.display()),
                    ),
                    other => other,
                })?;
            (&detached[..], Some(file.clone()))
        }
        None => match header.data_start {
            Some(start) => (&bytes[start..], None),
            None => {
                return Err(format_err(
                    path,
                    "the header is not followed by a blank line and data, and names no `data file`",
                ));
            }
        },
    };
    let source = match &data_name {
        Some(p) => format!("data file {}", p.display()),
        None => "attached data".to_string(),
    };
    let region = skip_lines(path, region, layout.line_skip, &source)?;
    let data = decode_data(path, region, &layout, &source)?;
    debug_assert_eq!(data.len(), layout.shape.iter().product::<usize>());
    Ok(Volume {
        data,
        shape: layout.shape,
        geometry: Geometry::from_affine(layout.affine),
    })
}

/// The header's fields and where attached data start.
struct Header {
    /// Known fields by normalised name: (header line number, value).
    fields: HashMap<&'static str, (usize, String)>,
    /// Byte offset just after the blank line ending the header; `None` when
    /// the header runs to the end of the file (a detached header).
    data_start: Option<usize>,
}

impl Header {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|(_, v)| v.as_str())
    }

    fn require(&self, path: &Path, key: &str, name: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| format_err(path, format!("required field `{name}` is missing")))
    }
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut fields: HashMap<&'static str, (usize, String)> = HashMap::new();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let mut data_start = None;
    while pos < bytes.len() {
        let (end, next) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (pos + i, pos + i + 1),
            None => (bytes.len(), bytes.len()),
        };
        let mut line = &bytes[pos..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        pos = next;
        line_no += 1;
        if line_no == 1 {
            check_magic(path, line)?;
            continue;
        }
        if line.is_empty() {
            data_start = Some(pos);
            break;
        }
        let text = std::str::from_utf8(line).map_err(|_| {
            format_err(
                path,
                format!(
                    "header line {line_no} is not UTF-8 text (is the blank line that ends the header missing?)"
                ),
            )
        })?;
        if text.starts_with('#') {
            continue;
        }
        let Some(colon) = text.find(':') else {
            return Err(format_err(
                path,
                format!(
                    "header line {line_no} is neither a `field: value`, a `key:=value` nor a `#` comment: {:?}",
                    clip(text)
                ),
            ));
        };
        if text[colon + 1..].starts_with('=') {
            continue; // key:=value pairs carry nothing we use
        }
        let name = text[..colon].trim();
        let value = text[colon + 1..].trim();
        let key: String = name
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let Some(&known) = KNOWN_FIELDS.iter().find(|&&k| k == key) else {
            tracing::debug!(
                "{}: ignoring NRRD field {name:?} on line {line_no}",
                path.display()
            );
            continue;
        };
        if let Some((first, _)) = fields.get(known) {
            return Err(format_err(
                path,
                format!("field `{name}` appears twice (lines {first} and {line_no})"),
            ));
        }
        fields.insert(known, (line_no, value.to_string()));
    }
    if line_no == 0 {
        return Err(format_err(path, "the file is empty"));
    }
    Ok(Header { fields, data_start })
}

fn check_magic(path: &Path, line: &[u8]) -> Result<()> {
    let trimmed = line.trim_ascii_end();
    if trimmed.len() == 8 && trimmed.starts_with(b"NRRD000") {
        return match trimmed[7] {
            b'1'..=b'5' => Ok(()),
            b'6'..=b'9' => Err(unsupported(
                path,
                format!(
                    "NRRD format version {} (magic {:?}); versions 1 to 5 are read",
                    trimmed[7] as char,
                    String::from_utf8_lossy(trimmed)
                ),
            )),
            _ => Err(bad_magic(path, line)),
        };
    }
    Err(bad_magic(path, line))
}

fn bad_magic(path: &Path, line: &[u8]) -> VolumeError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(16)]).into_owned();
    format_err(
        path,
        format!(
            "the file does not start with an NRRD magic (NRRD0001..NRRD0005) but with {shown:?}"
        ),
    )
}

/// Cuts a header line for an error message.
fn clip(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    Raw,
    Gzip,
    Ascii,
}

/// Everything the header says about the data and the geometry, checked.
struct Layout {
    dtype: DataType,
    encoding: Encoding,
    big_endian: bool,
    /// `byte skip`; -1 means "the data are the last bytes" (raw only).
    byte_skip: i64,
    line_skip: usize,
    data_file: Option<PathBuf>,
    /// Number of samples: the product of all `sizes`.
    count: usize,
    shape: [usize; 3],
    affine: Affine,
}

impl Layout {
    fn from_header(path: &Path, h: &Header) -> Result<Layout> {
        let dimension_text = h.require(path, "dimension", "dimension")?;
        let dimension: usize = dimension_text.parse().map_err(|_| {
            format_err(
                path,
                format!(
                    "`dimension: {}` is not a positive integer",
                    clip(dimension_text)
                ),
            )
        })?;
        if !(2..=4).contains(&dimension) {
            return Err(unsupported(
                path,
                format!(
                    "dimension {dimension}: only 3D volumes are read (or 2D images, or 4D files whose extra axis is non-spatial with one sample)"
                ),
            ));
        }
        let dtype = parse_type(path, h.require(path, "type", "type")?)?;
        let sizes = parse_sizes(path, h.require(path, "sizes", "sizes")?, dimension)?;
        let encoding = parse_encoding(path, h.require(path, "encoding", "encoding")?)?;
        let big_endian = match h.get("endian").map(|e| e.to_ascii_lowercase()) {
            Some(e) if e == "little" => false,
            Some(e) if e == "big" => true,
            Some(e) => {
                return Err(format_err(
                    path,
                    format!("`endian: {}` (expected little or big)", clip(&e)),
                ));
            }
            None if dtype.size() > 1 && encoding != Encoding::Ascii => {
                return Err(format_err(
                    path,
                    format!(
                        "required field `endian` is missing ({dtype:?} samples are {} bytes)",
                        dtype.size()
                    ),
                ));
            }
            None => false,
        };
        let byte_skip = match h.get("byteskip") {
            None => 0,
            Some(v) => match v.parse::<i64>() {
                Ok(-1) if encoding == Encoding::Raw => -1,
                Ok(-1) => {
                    return Err(format_err(
                        path,
                        "`byte skip: -1` is only allowed with raw encoding",
                    ));
                }
                Ok(n) if n >= 0 => n,
                _ => {
                    return Err(format_err(
                        path,
                        format!(
                            "`byte skip: {}` is not a non-negative integer or -1",
                            clip(v)
                        ),
                    ));
                }
            },
        };
        let line_skip = match h.get("lineskip") {
            None => 0,
            Some(v) => v.parse::<usize>().map_err(|_| {
                format_err(
                    path,
                    format!("`line skip: {}` is not a non-negative integer", clip(v)),
                )
            })?,
        };
        let data_file = match h.get("datafile") {
            None => None,
            Some(v) => Some(data_file_path(path, v)?),
        };
        let count = sizes
            .iter()
            .try_fold(1usize, |acc, &s| acc.checked_mul(s))
            .ok_or_else(|| {
                format_err(path, format!("sizes {sizes:?} overflow the address space"))
            })?;
        count.checked_mul(dtype.size()).ok_or_else(|| {
            format_err(path, format!("sizes {sizes:?} overflow the address space"))
        })?;
        confine::check_voxels(path, &sizes, dtype.size())?;
        let (shape, affine) = geometry(path, h, &sizes)?;
        Ok(Layout {
            dtype,
            encoding,
            big_endian,
            byte_skip,
            line_skip,
            data_file,
            count,
            shape,
            affine,
        })
    }

    /// The most bytes a data file can hold and still be this header's:
    /// the samples, the skips, and the encoding's worst case (gzip of
    /// incompressible data grows a little; text spends up to ~40 characters
    /// a sample), so a file far larger is refused unread.
    fn most_stored_bytes(&self) -> u64 {
        let need = self.data_bytes() as u64;
        let skips = self.byte_skip.max(0) as u64 + (self.line_skip as u64) * (1 << 16);
        let body = match self.encoding {
            Encoding::Raw => need,
            Encoding::Ascii => (self.count as u64).saturating_mul(40),
            Encoding::Gzip => need.saturating_add(need / 64),
        };
        body.saturating_add(skips).saturating_add(1 << 20)
    }

    /// Bytes of decoded sample data.
    fn data_bytes(&self) -> usize {
        // Checked in `from_header`.
        self.count * self.dtype.size()
    }
}

fn parse_type(path: &Path, value: &str) -> Result<DataType> {
    let norm = value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    Ok(match norm.as_str() {
        "signed char" | "int8" | "int8_t" => DataType::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => DataType::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            DataType::I16
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => DataType::U16,
        "int" | "signed int" | "int32" | "int32_t" => DataType::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => DataType::U32,
        "float" => DataType::F32,
        "double" => DataType::F64,
        "longlong"
        | "long long"
        | "long long int"
        | "signed long long"
        | "signed long long int"
        | "int64"
        | "int64_t"
        | "ulonglong"
        | "unsigned long long"
        | "unsigned long long int"
        | "uint64"
        | "uint64_t" => {
            return Err(unsupported(
                path,
                format!(
                    "`type: {value}`: 64-bit integer samples are not supported (convert to int32 or double)"
                ),
            ));
        }
        "block" => {
            return Err(unsupported(
                path,
                "`type: block` (opaque blocks are not voxel values)",
            ));
        }
        _ => {
            return Err(format_err(
                path,
                format!("`type: {}` is not an NRRD type", clip(value)),
            ));
        }
    })
}

fn parse_encoding(path: &Path, value: &str) -> Result<Encoding> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "raw" => Encoding::Raw,
        "gzip" | "gz" => Encoding::Gzip,
        "ascii" | "text" | "txt" => Encoding::Ascii,
        "bzip2" | "bz2" | "hex" | "zrl" => {
            return Err(unsupported(
                path,
                format!("`encoding: {value}` (supported: raw, gzip, ascii)"),
            ));
        }
        _ => {
            return Err(format_err(
                path,
                format!("`encoding: {}` is not an NRRD encoding", clip(value)),
            ));
        }
    })
}

fn parse_sizes(path: &Path, value: &str, dimension: usize) -> Result<Vec<usize>> {
    let sizes = value
        .split_whitespace()
        .map(|t| t.parse::<usize>().ok().filter(|&s| s > 0))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            format_err(
                path,
                format!("`sizes: {}` are not positive integers", clip(value)),
            )
        })?;
    if sizes.len() != dimension {
        return Err(format_err(
            path,
            format!(
                "`sizes` gives {} values but `dimension` is {dimension}",
                sizes.len()
            ),
        ));
    }
    Ok(sizes)
}

/// The detached data file a `data file` field names, relative to the
/// header's folder. The list and pattern forms are refused.
fn data_file_path(path: &Path, value: &str) -> Result<PathBuf> {
    let tokens: Vec<&str> = value.split_whitespace().collect();
    if tokens.first() == Some(&"LIST") {
        return Err(unsupported(
            path,
            "`data file: LIST` (data split over several files); only a single data file is read",
        ));
    }
    if tokens.len() >= 4 && tokens[1..4].iter().all(|t| t.parse::<i64>().is_ok()) {
        return Err(unsupported(
            path,
            format!(
                "`data file: {}` names a pattern of several files; only a single data file is read",
                clip(value)
            ),
        ));
    }
    if value.is_empty() {
        return Err(format_err(path, "`data file` is empty"));
    }
    // The data file must lie in the header's folder or below it (symlinks
    // followed): a header must not pull other files into a cache.
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file = Path::new(value);
    let file = if file.is_absolute() {
        file.to_path_buf()
    } else {
        folder.join(file)
    };
    match confine::inside(folder, &file, "`data file`", path) {
        Ok(_) => Ok(file),
        // Missing: reported when read, with the header's wording.
        Err(VolumeError::Io { .. }) => Ok(file),
        Err(e) => Err(e),
    }
}

/// World axes to negate to go from a named space to RAS+, and the number of
/// components of its vectors.
fn space_flips(path: &Path, h: &Header) -> Result<Option<(usize, [f64; 3])>> {
    let named = match h.get("space") {
        None => None,
        Some(s) => Some(match s.to_ascii_lowercase().as_str() {
            "right-anterior-superior" | "ras" | "3d-right-handed" => (3, [1.0, 1.0, 1.0]),
            "left-anterior-superior" | "las" => (3, [-1.0, 1.0, 1.0]),
            "left-posterior-superior" | "lps" => (3, [-1.0, -1.0, 1.0]),
            "scanner-xyz"
            | "3d-left-handed"
            | "right-anterior-superior-time"
            | "rast"
            | "left-anterior-superior-time"
            | "last"
            | "left-posterior-superior-time"
            | "lpst"
            | "scanner-xyz-time"
            | "3d-right-handed-time"
            | "3d-left-handed-time" => {
                return Err(unsupported(
                    path,
                    format!(
                        "`space: {s}` (supported: left-posterior-superior, right-anterior-superior, left-anterior-superior, 3D-right-handed)"
                    ),
                ));
            }
            _ => {
                return Err(format_err(
                    path,
                    format!("`space: {}` is not an NRRD space", clip(s)),
                ));
            }
        }),
    };
    let dim = match h.get("spacedimension") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(d @ 2..=3) => Some(d),
            Ok(d) => {
                return Err(unsupported(
                    path,
                    format!("`space dimension: {d}` (2 or 3 are read)"),
                ));
            }
            Err(_) => {
                return Err(format_err(
                    path,
                    format!("`space dimension: {}` is not an integer", clip(v)),
                ));
            }
        },
    };
    match (named, dim) {
        (Some((n, _)), Some(d)) if n != d => Err(format_err(
            path,
            format!("`space dimension: {d}` contradicts the {n}D `space`"),
        )),
        (Some(named), _) => Ok(Some(named)),
        // A bare space dimension: a right-handed space without a name.
        (None, Some(d)) => Ok(Some((d, [1.0, 1.0, 1.0]))),
        (None, None) => Ok(None),
    }
}

/// Parses `(a,b,c)`; `none` gives `None`.
fn parse_vector(path: &Path, field: &str, token: &str, n: usize) -> Result<Option<Vec<f64>>> {
    if token.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        format_err(
            path,
            format!(
                "`{field}` entry {:?} is not a vector of {n} finite numbers `(x,y,z)` or `none`",
                clip(token)
            ),
        )
    };
    let inner = token
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(bad)?;
    let v = inner
        .split(',')
        .map(|c| c.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(bad)?;
    if v.len() != n {
        return Err(bad());
    }
    Ok(Some(v))
}

/// Splits a `space directions` value into its entries: parenthesised
/// vectors (which may hold spaces) and bare words such as `none`.
fn vector_tokens(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' {
            let mut t = String::new();
            for c in chars.by_ref() {
                if !c.is_whitespace() {
                    t.push(c);
                }
                if c == ')' {
                    break;
                }
            }
            out.push(t);
        } else {
            let mut t = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '(' {
                    break;
                }
                t.push(c);
                chars.next();
            }
            out.push(t);
        }
    }
    out
}

/// Kinds that describe a spatial (or unknown) axis.
fn kind_is_spatial(kind: &str) -> bool {
    matches!(
        kind.to_ascii_lowercase().as_str(),
        "domain" | "space" | "???" | "none"
    )
}

/// Shape and RAS+ affine from the header's geometry fields.
fn geometry(path: &Path, h: &Header, sizes: &[usize]) -> Result<([usize; 3], Affine)> {
    let dimension = sizes.len();
    let space = space_flips(path, h)?;
    let directions: Option<Vec<Option<Vec<f64>>>> = match (h.get("spacedirections"), space) {
        (Some(_), None) => {
            return Err(format_err(
                path,
                "`space directions` is given without a `space` or `space dimension`",
            ));
        }
        (Some(v), Some((n, _))) => {
            let tokens = vector_tokens(v);
            if tokens.len() != dimension {
                return Err(format_err(
                    path,
                    format!(
                        "`space directions` gives {} entries but `dimension` is {dimension}",
                        tokens.len()
                    ),
                ));
            }
            Some(
                tokens
                    .iter()
                    .map(|t| parse_vector(path, "space directions", t, n))
                    .collect::<Result<_>>()?,
            )
        }
        (None, _) => None,
    };
    let kinds: Option<Vec<String>> = match h.get("kinds") {
        None => None,
        Some(v) => {
            let k: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            if k.len() != dimension {
                return Err(format_err(
                    path,
                    format!(
                        "`kinds` gives {} entries but `dimension` is {dimension}",
                        k.len()
                    ),
                ));
            }
            Some(k)
        }
    };
    let spacings: Option<Vec<f64>> = match h.get("spacings") {
        None => None,
        Some(v) => {
            let s = v
                .split_whitespace()
                .map(|t| t.parse::<f64>().ok())
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| {
                    format_err(
                        path,
                        format!("`spacings: {}` are not numbers (or nan)", clip(v)),
                    )
                })?;
            if s.len() != dimension {
                return Err(format_err(
                    path,
                    format!(
                        "`spacings` gives {} values but `dimension` is {dimension}",
                        s.len()
                    ),
                ));
            }
            Some(s)
        }
    };

    // Which axes are spatial: by their direction, else their kind, else a
    // 4D file's first axis is taken as the non-spatial one.
    let spatial: Vec<usize> = if let Some(d) = &directions {
        (0..dimension).filter(|&a| d[a].is_some()).collect()
    } else if let Some(k) = &kinds {
        (0..dimension).filter(|&a| kind_is_spatial(&k[a])).collect()
    } else if dimension == 4 {
        (1..4).collect()
    } else {
        (0..dimension).collect()
    };
    for a in (0..dimension).filter(|a| !spatial.contains(a)) {
        if sizes[a] != 1 {
            let kind = kinds
                .as_ref()
                .map(|k| format!(" (kind {})", k[a]))
                .unwrap_or_default();
            return Err(unsupported(
                path,
                format!(
                    "axis {a} is non-spatial{kind} with {} samples; only a single scalar volume is read",
                    sizes[a]
                ),
            ));
        }
    }
    if !(2..=3).contains(&spatial.len()) {
        return Err(unsupported(
            path,
            format!(
                "{} spatial axes among sizes {sizes:?}; a volume needs 3 (or 2 for one slice)",
                spatial.len()
            ),
        ));
    }

    let mut shape = [1usize; 3];
    let mut columns: Vec<[f64; 3]> = Vec::with_capacity(3);
    for (k, &a) in spatial.iter().enumerate() {
        shape[k] = sizes[a];
        let column = match (&directions, &spacings) {
            (Some(d), _) => {
                let v = d[a].as_ref().expect("spatial axes have directions");
                let mut c = [0.0; 3];
                c[..v.len()].copy_from_slice(v);
                c
            }
            (None, s) => {
                let given = s.as_ref().map(|s| s[a]);
                let sp = given.filter(|x| x.is_finite() && *x != 0.0).unwrap_or(1.0);
                if let Some(g) = given.filter(|x| !(x.is_finite() && *x != 0.0)) {
                    // As the NIfTI reader does for an unusable pixdim.
                    tracing::warn!(
                        "{}: `spacings` gives {g} for axis {a}, not a usable spacing; using 1 mm",
                        path.display()
                    );
                }
                let mut c = [0.0; 3];
                c[k] = sp;
                c
            }
        };
        let norm = column.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(format_err(
                path,
                format!("the direction of axis {a} has length {norm}, not a usable spacing"),
            ));
        }
        columns.push(column);
    }
    if columns.len() == 2 {
        // One slice: the third axis is the unit normal of the first two.
        let (u, v) = (columns[0], columns[1]);
        let n = [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ];
        let len = n.iter().map(|x| x * x).sum::<f64>().sqrt();
        columns.push(if len > 0.0 && len.is_finite() {
            n.map(|x| x / len)
        } else {
            [0.0, 0.0, 1.0]
        });
    }
    let det = columns[0][0] * (columns[1][1] * columns[2][2] - columns[1][2] * columns[2][1])
        - columns[1][0] * (columns[0][1] * columns[2][2] - columns[0][2] * columns[2][1])
        + columns[2][0] * (columns[0][1] * columns[1][2] - columns[0][2] * columns[1][1]);
    let scale: f64 = columns
        .iter()
        .map(|c| c.iter().map(|x| x * x).sum::<f64>().sqrt())
        .product();
    if !det.is_finite() || det.abs() <= 1e-9 * scale {
        return Err(format_err(
            path,
            "the space directions are degenerate (not linearly independent) or out of range",
        ));
    }

    let mut origin = [0.0f64; 3];
    if let Some(v) = h.get("spaceorigin") {
        let Some((n, _)) = space else {
            return Err(format_err(
                path,
                "`space origin` is given without a `space` or `space dimension`",
            ));
        };
        let o = parse_vector(path, "space origin", v.trim(), n)?
            .ok_or_else(|| format_err(path, "`space origin: none` is not an origin"))?;
        origin[..o.len()].copy_from_slice(&o);
    }
    let flips = space.map(|(_, f)| f).unwrap_or([1.0, 1.0, 1.0]);
    let mut affine = identity();
    for r in 0..3 {
        for (c, column) in columns.iter().enumerate() {
            affine[r][c] = flips[r] * column[r];
        }
        affine[r][3] = flips[r] * origin[r];
    }
    // Negating zero gives -0.0; keep the affine free of signed zeros.
    for row in affine.iter_mut() {
        for x in row.iter_mut() {
            if *x == 0.0 {
                *x = 0.0;
            }
        }
    }
    Ok((shape, affine))
}

/// Drops the first `n` lines (each ended by `\n`) of the data region.
fn skip_lines<'a>(path: &Path, region: &'a [u8], n: usize, source: &str) -> Result<&'a [u8]> {
    let mut rest = region;
    for i in 0..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(p) => rest = &rest[p + 1..],
            None => {
                return Err(format_err(
                    path,
                    format!("`line skip: {n}` but the {source} ends after {i} lines"),
                ));
            }
        }
    }
    Ok(rest)
}

fn decode_data(path: &Path, region: &[u8], layout: &Layout, source: &str) -> Result<VoxelData> {
    let need = layout.data_bytes();
    let dtype = layout.dtype;
    match layout.encoding {
        Encoding::Raw => {
            let raw = if layout.byte_skip == -1 {
                if region.len() < need {
                    return Err(format_err(
                        path,
                        format!(
                            "sizes need {need} bytes of {dtype:?} data but the {source} holds only {} (truncated file or wrong sizes)",
                            region.len()
                        ),
                    ));
                }
                &region[region.len() - need..]
            } else {
                let skip = usize::try_from(layout.byte_skip).unwrap_or(usize::MAX);
                let have = region.len().saturating_sub(skip);
                if region.len() < skip || have != need {
                    return Err(length_mismatch(path, need, have, skip, dtype, source));
                }
                &region[skip..]
            };
            Ok(decode_raw(raw, dtype, layout.big_endian))
        }
        Encoding::Gzip => {
            let skip = usize::try_from(layout.byte_skip).unwrap_or(usize::MAX);
            let total = need
                .checked_add(skip)
                .ok_or_else(|| format_err(path, "`byte skip` plus the data size overflows"))?;
            let out = gunzip_exact(path, region, total, source)?;
            if out.len() != total {
                return Err(length_mismatch(
                    path,
                    need,
                    out.len().saturating_sub(skip),
                    skip,
                    dtype,
                    &format!("decompressed {source}"),
                ));
            }
            Ok(decode_raw(&out[skip..], dtype, layout.big_endian))
        }
        Encoding::Ascii => {
            let skip = usize::try_from(layout.byte_skip).unwrap_or(usize::MAX);
            let text = region.get(skip..).ok_or_else(|| {
                format_err(
                    path,
                    format!(
                        "`byte skip: {skip}` passes the end of the {source} ({} bytes)",
                        region.len()
                    ),
                )
            })?;
            parse_ascii(path, text, dtype, layout.count, source)
        }
    }
}

fn length_mismatch(
    path: &Path,
    need: usize,
    have: usize,
    skip: usize,
    dtype: DataType,
    source: &str,
) -> VolumeError {
    let what = if have < need {
        "truncated file or wrong sizes"
    } else {
        "more data than sizes describe: wrong sizes or type"
    };
    format_err(
        path,
        format!(
            "sizes need {need} bytes of {dtype:?} data but the {source} holds {have} after skipping {skip} bytes ({what})"
        ),
    )
}

/// Decompresses a gzip stream, reading at most `want + 1` bytes so a huge
/// `sizes` or a gzip bomb cannot make us allocate more than the header
/// promises; checks the stream can plausibly hold `want` bytes first.
fn gunzip_exact(path: &Path, raw: &[u8], want: usize, source: &str) -> Result<Vec<u8>> {
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Err(format_err(
            path,
            format!("`encoding: gzip` but the {source} does not start with the gzip magic bytes"),
        ));
    }
    if want
        > raw
            .len()
            .saturating_mul(MAX_GZIP_RATIO)
            .saturating_add(1024)
    {
        return Err(format_err(
            path,
            format!(
                "sizes need {want} bytes but {} bytes of gzip data cannot expand to that many (truncated file or wrong sizes)",
                raw.len()
            ),
        ));
    }
    let limit = want.saturating_add(1);
    let mut out =
        Vec::with_capacity(limit.min(raw.len().saturating_mul(4).saturating_add(1 << 16)));
    MultiGzDecoder::new(raw)
        .take(limit as u64)
        .read_to_end(&mut out)
        .map_err(|e| {
            format_err(
                path,
                format!(
                    "corrupt or truncated gzip stream in the {source} after {} decompressed bytes: {e}",
                    out.len()
                ),
            )
        })?;
    Ok(out)
}

fn parse_ascii(
    path: &Path,
    text: &[u8],
    dtype: DataType,
    count: usize,
    source: &str,
) -> Result<VoxelData> {
    // Every value takes at least one character and a separator.
    if count > text.len() / 2 + 1 {
        return Err(format_err(
            path,
            format!(
                "sizes need {count} ascii values but the {source} holds only {} bytes",
                text.len()
            ),
        ));
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| format_err(path, format!("the ascii {source} is not text")))?;
    let mut tokens = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty());
    macro_rules! parse_all {
        ($t:ty, $variant:ident) => {{
            let mut v: Vec<$t> = Vec::with_capacity(count);
            for i in 0..count {
                let token = tokens.next().ok_or_else(|| {
                    format_err(
                        path,
                        format!("sizes need {count} ascii values but the {source} holds {i}"),
                    )
                })?;
                v.push(token.parse::<$t>().map_err(|_| {
                    format_err(
                        path,
                        format!(
                            "ascii value {i} {:?} is not a {:?} in the {source}",
                            clip(token),
                            dtype
                        ),
                    )
                })?);
            }
            VoxelData::$variant(v)
        }};
    }
    let data = match dtype {
        DataType::U8 => parse_all!(u8, U8),
        DataType::I8 => parse_all!(i8, I8),
        DataType::I16 => parse_all!(i16, I16),
        DataType::U16 => parse_all!(u16, U16),
        DataType::I32 => parse_all!(i32, I32),
        DataType::U32 => parse_all!(u32, U32),
        DataType::F32 => parse_all!(f32, F32),
        DataType::F64 => parse_all!(f64, F64),
    };
    if tokens.next().is_some() {
        return Err(format_err(
            path,
            format!("the ascii {source} holds more than the {count} values sizes describe"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_tokens_split_entries() {
        assert_eq!(
            vector_tokens("(1, 0,0) none  (0,0, 2.5)"),
            vec!["(1,0,0)", "none", "(0,0,2.5)"]
        );
        assert_eq!(vector_tokens(""), Vec::<String>::new());
    }

    #[test]
    fn types_map_onto_dtml() {
        let p = Path::new("x.nrrd");
        assert_eq!(parse_type(p, "unsigned  char").unwrap(), DataType::U8);
        assert_eq!(parse_type(p, "short int").unwrap(), DataType::I16);
        assert_eq!(parse_type(p, "uint16_t").unwrap(), DataType::U16);
        assert!(matches!(
            parse_type(p, "int64"),
            Err(VolumeError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_type(p, "quux"),
            Err(VolumeError::Format { .. })
        ));
    }
}
