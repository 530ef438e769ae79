//! Parsers for flag values that are not a library type's `FromStr` (sizes
//! and strides parse as [`dtml_volume::Xyz`] directly).

use dtml_volume::Xyz;

/// Parses a margin `x,y,z` where `full` keeps an axis whole.
pub fn margin(s: &str) -> Result<Xyz<Option<usize>>, String> {
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
    Ok(Xyz::from_xyz(out))
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
    fn parses_margins_and_lists() {
        assert_eq!(
            margin("10,12,full").unwrap(),
            Xyz::new(Some(10), Some(12), None)
        );
        assert!(margin("a,1,2").is_err());
        assert_eq!(int_list("1, 2,255").unwrap(), vec![1, 2, 255]);
    }
}
