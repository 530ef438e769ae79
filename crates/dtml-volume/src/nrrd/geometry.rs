//! Geometry of an NRRD header: which axes are spatial, their directions
//! and the origin, converted from the file's space to RAS+.

use super::*;

/// World axes to negate to go from a named space to RAS+, and the number of
/// components of its vectors.
pub(super) fn space_flips(path: &Path, h: &Header) -> Result<Option<(usize, [f64; 3])>> {
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
pub(super) fn parse_vector(
    path: &Path,
    field: &str,
    token: &str,
    n: usize,
) -> Result<Option<Vec<f64>>> {
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
pub(super) fn vector_tokens(value: &str) -> Vec<String> {
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
pub(super) fn kind_is_spatial(kind: &str) -> bool {
    matches!(
        kind.to_ascii_lowercase().as_str(),
        "domain" | "space" | "???" | "none"
    )
}

/// Shape and RAS+ affine from the header's geometry fields.
pub(super) fn geometry(path: &Path, h: &Header, sizes: &[usize]) -> Result<(Xyz<usize>, Affine)> {
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
    Ok((Xyz::from_xyz(shape), affine))
}
