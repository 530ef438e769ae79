//! The voxel data of an NRRD file: line and byte skips, raw, gzip and
//! ASCII encodings, checked against `sizes` before allocating.

use super::*;

/// Drops the first `n` lines (each ended by `\n`) of the data region.
pub(super) fn skip_lines<'a>(
    path: &Path,
    region: &'a [u8],
    n: usize,
    source: &str,
) -> Result<&'a [u8]> {
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

pub(super) fn decode_data(
    path: &Path,
    region: &[u8],
    layout: &Layout,
    source: &str,
) -> Result<VoxelData> {
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

pub(super) fn length_mismatch(
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
pub(super) fn gunzip_exact(path: &Path, raw: &[u8], want: usize, source: &str) -> Result<Vec<u8>> {
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
    // Member by member, each checked to its CRC; bytes after the last
    // member that are no further member are ignored, as zlib and pynrrd
    // ignore them, but a cut member is an error.
    let mut rest = raw;
    while !rest.is_empty() && out.len() < limit {
        if rest.len() < 2 || rest[0] != 0x1f || rest[1] != 0x8b {
            tracing::debug!(
                "{}: ignoring {} bytes after the gzip data in the {source}",
                path.display(),
                rest.len()
            );
            break;
        }
        let mut member = flate2::bufread::GzDecoder::new(rest).take((limit - out.len()) as u64);
        member.read_to_end(&mut out).map_err(|e| {
            let what = if out.len() < want {
                format!(
                    "ends after {} of the {want} bytes the sizes need",
                    out.len()
                )
            } else {
                "is cut or corrupt after its data (no intact end of stream)".to_string()
            };
            format_err(path, format!("the gzip stream in the {source} {what}: {e}"))
        })?;
        rest = member.into_inner().into_inner();
    }
    Ok(out)
}

pub(super) fn parse_ascii(
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
