//! Parsers for flag values given in (x, y, z) order.

/// Parses `A,B,C` (or `AxBxC`) into three values.
pub fn triple<T: std::str::FromStr>(s: &str) -> Result<[T; 3], String> {
    let parts: Vec<&str> = s.split([',', 'x']).map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!("expected three values x,y,z, got {s:?}"));
    }
    let mut out = Vec::with_capacity(3);
    for p in parts {
        out.push(
            p.parse::<T>()
                .map_err(|_| format!("{p:?} is not a valid number"))?,
        );
    }
    out.try_into()
        .map_err(|_| "expected three values".to_string())
}

/// Parses a margin triple where `full` keeps an axis whole.
pub fn margin(s: &str) -> Result<[Option<usize>; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!(
            "expected three margins x,y,z (a number or 'full'), got {s:?}"
        ));
    }
    let mut out = [None; 3];
    for (a, p) in parts.iter().enumerate() {
        out[a] = match *p {
            "full" | "none" => None,
            v => Some(
                v.parse()
                    .map_err(|_| format!("{v:?} is neither a number nor 'full'"))?,
            ),
        };
    }
    Ok(out)
}

/// Parses a comma-separated list of integers. A flag using it must be
/// typed `Option<::std::vec::Vec<i64>>`: clap's derive reads a plain
/// `Option<Vec<_>>` as a repeated flag of single values and panics when
/// the parsed list is accessed.
pub fn int_list(s: &str) -> Result<Vec<i64>, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<i64>()
                .map_err(|_| format!("{p:?} is not an integer"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_triples_and_margins() {
        assert_eq!(triple::<usize>("112,112,80").unwrap(), [112, 112, 80]);
        assert_eq!(triple::<usize>("4x5x6").unwrap(), [4, 5, 6]);
        assert!(triple::<usize>("1,2").is_err());
        assert_eq!(margin("10,12,full").unwrap(), [Some(10), Some(12), None]);
        assert!(margin("a,1,2").is_err());
        assert_eq!(int_list("1, 2,255").unwrap(), vec![1, 2, 255]);
    }
}
