//! Axis order, decided in one place. Every size, voxel index, stride and
//! spacing in dtml is an [`Xyz`]: three values in NIfTI order (x, y, z),
//! with x varying fastest in memory. Tensors (candle, safetensors) and the
//! distance crate take the same memory as a row-major `(Z, Y, X)` array;
//! [`Xyz::zyx`], [`Xyz::from_zyx`] and [`Xyz::batch_dims`] are the only
//! places that turn one order into the other, at those edges.
//!
//! Flags parse into it (`112,112,80` is x = 112, y = 112, z = 80); TOML
//! and JSON files store it as the array `[x, y, z]`.
//!
//! ```
//! use dtml_volume::axes::Xyz;
//! let shape: Xyz<usize> = "48,40,32".parse().unwrap();
//! assert_eq!(shape, Xyz::new(48, 40, 32));
//! assert_eq!((shape.x(), shape.z()), (48, 32));
//! assert_eq!(shape.zyx(), [32, 40, 48]);
//! assert_eq!(Xyz::from_zyx(shape.zyx()), shape);
//! assert_eq!(shape.batch_dims(2, 1), (2, 1, 32, 40, 48));
//! assert_eq!(shape.voxels(), 48 * 40 * 32);
//! assert_eq!(shape.to_string(), "48,40,32");
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Index;
use std::str::FromStr;

/// Three per-axis values in NIfTI order (x, y, z): a size in voxels, a
/// voxel index, a stride, a spacing in mm. Indexing by axis (`v[0]` is x)
/// serves per-axis loops; the tensor order is only reachable through
/// [`Xyz::zyx`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Xyz<T>([T; 3]);

impl<T: Copy> Xyz<T> {
    /// The values for x, y and z.
    pub const fn new(x: T, y: T, z: T) -> Xyz<T> {
        Xyz([x, y, z])
    }

    /// From an array already in (x, y, z) order (file headers, user lists).
    pub const fn from_xyz(xyz: [T; 3]) -> Xyz<T> {
        Xyz(xyz)
    }

    /// From an array in row-major tensor order (z, y, x).
    pub fn from_zyx(zyx: [T; 3]) -> Xyz<T> {
        Xyz([zyx[2], zyx[1], zyx[0]])
    }

    /// The value of each axis from its index (0 = x).
    pub fn from_fn(f: impl FnMut(usize) -> T) -> Xyz<T> {
        Xyz(std::array::from_fn(f))
    }

    /// The same value on every axis.
    pub const fn splat(v: T) -> Xyz<T> {
        Xyz([v, v, v])
    }

    pub fn x(self) -> T {
        self.0[0]
    }

    pub fn y(self) -> T {
        self.0[1]
    }

    pub fn z(self) -> T {
        self.0[2]
    }

    /// The values as an array in (x, y, z) order (file headers, JSON).
    pub const fn xyz(self) -> [T; 3] {
        self.0
    }

    /// The values in row-major tensor order (z, y, x).
    pub fn zyx(self) -> [T; 3] {
        [self.0[2], self.0[1], self.0[0]]
    }

    /// Applies `f` to each axis.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Xyz<U> {
        Xyz(self.0.map(f))
    }

    /// Combines two per-axis values axis by axis.
    pub fn zip_with<U: Copy, V>(self, other: Xyz<U>, mut f: impl FnMut(T, U) -> V) -> Xyz<V> {
        Xyz(std::array::from_fn(|a| f(self.0[a], other.0[a])))
    }

    /// Whether `f` holds on every axis.
    pub fn all(self, f: impl FnMut(T) -> bool) -> bool {
        self.0.into_iter().all(f)
    }

    /// Whether `f` holds on some axis.
    pub fn any(self, f: impl FnMut(T) -> bool) -> bool {
        self.0.into_iter().any(f)
    }
}

impl Xyz<usize> {
    /// The number of voxels of a grid of this size (saturating, so a
    /// hostile header cannot wrap it).
    pub fn voxels(self) -> usize {
        self.0.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// The 5-D tensor shape `(N, C, Z, Y, X)` of `n` volumes of `channels`
    /// channels of this size.
    pub fn batch_dims(self, n: usize, channels: usize) -> (usize, usize, usize, usize, usize) {
        let [z, y, x] = self.zyx();
        (n, channels, z, y, x)
    }

    /// The linear memory index of voxel `at` in a grid of this size (x
    /// fastest).
    pub fn linear(self, at: Xyz<usize>) -> usize {
        at.0[0] + self.0[0] * (at.0[1] + self.0[1] * at.0[2])
    }

    /// The voxel at linear memory index `i` of a grid of this size.
    pub fn position(self, i: usize) -> Xyz<usize> {
        let [nx, ny, _] = self.0;
        Xyz([i % nx, (i / nx) % ny, i / (nx * ny)])
    }
}

/// The axes' names, by index.
pub const AXIS_NAMES: [&str; 3] = ["x", "y", "z"];

impl<T> IntoIterator for Xyz<T> {
    type Item = T;
    type IntoIter = std::array::IntoIter<T, 3>;
    /// The values in (x, y, z) order.
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<T> Index<usize> for Xyz<T> {
    type Output = T;
    /// The value of axis `axis` (0 = x, 1 = y, 2 = z).
    fn index(&self, axis: usize) -> &T {
        &self.0[axis]
    }
}

impl<T: fmt::Display> fmt::Display for Xyz<T> {
    /// `x,y,z`, as flags take it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.0[0], self.0[1], self.0[2])
    }
}

impl<T: fmt::Debug> fmt::Debug for Xyz<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(x {:?}, y {:?}, z {:?})",
            self.0[0], self.0[1], self.0[2]
        )
    }
}

/// Why a text is not three per-axis values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected three values x,y,z (for example 112,112,80), got {text:?}: {why}")]
pub struct ParseXyzError {
    text: String,
    why: String,
}

impl<T: FromStr + Copy> FromStr for Xyz<T>
where
    T::Err: fmt::Display,
{
    type Err = ParseXyzError;

    /// `x,y,z` or `XxYxZ` (spaces around the separators allowed).
    fn from_str(s: &str) -> Result<Xyz<T>, ParseXyzError> {
        let fail = |why: String| ParseXyzError {
            text: s.to_string(),
            why,
        };
        let parts: Vec<&str> = s.split([',', 'x']).map(str::trim).collect();
        if parts.len() != 3 {
            return Err(fail(format!("{} values", parts.len())));
        }
        let mut values = Vec::with_capacity(3);
        for p in parts {
            values.push(p.parse::<T>().map_err(|e| fail(format!("{p:?}: {e}")))?);
        }
        Ok(Xyz([values[0], values[1], values[2]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_in_xyz_order() {
        let v: Xyz<usize> = " 112, 96 ,80".parse().unwrap();
        assert_eq!(v, Xyz::new(112, 96, 80));
        assert_eq!("4x5x6".parse::<Xyz<usize>>().unwrap(), Xyz::new(4, 5, 6));
        assert_eq!(v.to_string(), "112,96,80");
        let s: Xyz<f64> = "0.625,0.625,2.5".parse().unwrap();
        assert_eq!(s.zyx(), [2.5, 0.625, 0.625]);
    }

    #[test]
    fn refuses_other_counts_and_non_numbers() {
        for bad in ["112,112", "1,2,3,4", "", "a,2,3", "1,-2,3", "1,,3"] {
            let e = bad.parse::<Xyz<usize>>().unwrap_err().to_string();
            assert!(e.contains("x,y,z"), "{bad}: {e}");
        }
    }

    #[test]
    fn json_is_the_plain_array() {
        let v = Xyz::new(3usize, 4, 5);
        assert_eq!(serde_json::to_string(&v).unwrap(), "[3,4,5]");
        let back: Xyz<usize> = serde_json::from_str("[3,4,5]").unwrap();
        assert_eq!(back, v);
        assert!(serde_json::from_str::<Xyz<usize>>("[3,4]").is_err());
    }

    #[test]
    fn memory_index_and_position_agree() {
        let shape = Xyz::new(5usize, 4, 3);
        for i in 0..shape.voxels() {
            assert_eq!(shape.linear(shape.position(i)), i);
        }
        assert_eq!(shape.linear(Xyz::new(1, 2, 1)), 1 + 5 * (2 + 4));
        assert_eq!(Xyz::new(usize::MAX, 2, 1).voxels(), usize::MAX);
    }
}
