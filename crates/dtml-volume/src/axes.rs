//! Axis order, decided in one place. Everything a user gives and every
//! `[usize; 3]` size, index or spacing in dtml is in NIfTI order (x, y, z),
//! with x varying fastest in memory. Tensors (candle, safetensors) and the
//! distance crate take the same memory as a row-major `(Z, Y, X)` array;
//! these helpers are the only places that turn one order into the other.
//!
//! ```
//! use dtml_volume::axes;
//! let shape = [48, 40, 32]; // x, y, z
//! assert_eq!(axes::zyx(shape), [32, 40, 48]);
//! assert_eq!(axes::xyz(axes::zyx(shape)), shape);
//! assert_eq!(axes::batch_dims(2, 1, shape), (2, 1, 32, 40, 48));
//! ```

/// `[x, y, z]` in row-major tensor order `[z, y, x]`.
pub fn zyx<T: Copy>(xyz: [T; 3]) -> [T; 3] {
    [xyz[2], xyz[1], xyz[0]]
}

/// Row-major tensor order `[z, y, x]` back in `[x, y, z]`.
pub fn xyz<T: Copy>(zyx: [T; 3]) -> [T; 3] {
    [zyx[2], zyx[1], zyx[0]]
}

/// The 5-D tensor shape `(N, C, Z, Y, X)` of `n` volumes of `channels`
/// channels of size `xyz`.
pub fn batch_dims(
    n: usize,
    channels: usize,
    xyz: [usize; 3],
) -> (usize, usize, usize, usize, usize) {
    let [z, y, x] = zyx(xyz);
    (n, channels, z, y, x)
}
