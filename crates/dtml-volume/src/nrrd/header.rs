//! The NRRD header: magic, fields, and the checked data layout they
//! describe (type, encoding, sizes, skips, the detached data file).

use super::*;

/// The header's fields and where attached data start.
pub(super) struct Header {
    /// Known fields by normalised name: (header line number, value).
    pub(super) fields: HashMap<&'static str, (usize, String)>,
    /// Byte offset just after the blank line ending the header; `None` when
    /// the header runs to the end of the file (a detached header).
    pub(super) data_start: Option<usize>,
}

impl Header {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|(_, v)| v.as_str())
    }

    pub(super) fn require(&self, path: &Path, key: &str, name: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| format_err(path, format!("required field `{name}` is missing")))
    }
}

pub(super) fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
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

pub(super) fn check_magic(path: &Path, line: &[u8]) -> Result<()> {
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

pub(super) fn bad_magic(path: &Path, line: &[u8]) -> VolumeError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(16)]).into_owned();
    format_err(
        path,
        format!(
            "the file does not start with an NRRD magic (NRRD0001..NRRD0005) but with {shown:?}"
        ),
    )
}

/// Cuts a header line for an error message.
pub(super) fn clip(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Encoding {
    Raw,
    Gzip,
    Ascii,
}

/// Everything the header says about the data and the geometry, checked.
pub(super) struct Layout {
    pub(super) dtype: DataType,
    pub(super) encoding: Encoding,
    pub(super) big_endian: bool,
    /// `byte skip`; -1 means "the data are the last bytes" (raw only).
    pub(super) byte_skip: i64,
    pub(super) line_skip: usize,
    pub(super) data_file: Option<PathBuf>,
    /// Number of samples: the product of all `sizes`.
    pub(super) count: usize,
    pub(super) shape: Xyz<usize>,
    pub(super) affine: Affine,
}

impl Layout {
    pub(super) fn from_header(path: &Path, h: &Header) -> Result<Layout> {
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
    pub(super) fn most_stored_bytes(&self) -> u64 {
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
    pub(super) fn data_bytes(&self) -> usize {
        // Checked in `from_header`.
        self.count * self.dtype.size()
    }
}

pub(super) fn parse_type(path: &Path, value: &str) -> Result<DataType> {
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

pub(super) fn parse_encoding(path: &Path, value: &str) -> Result<Encoding> {
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

pub(super) fn parse_sizes(path: &Path, value: &str, dimension: usize) -> Result<Vec<usize>> {
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
pub(super) fn data_file_path(path: &Path, value: &str) -> Result<PathBuf> {
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
