//! Largest connected component (scikit-image `label` conventions).

use crate::{EdtError, Grid, MaskValue};

/// Neighbourhood of connected-component labelling, named by its 3D
/// neighbour count (`6`, `26`) in files and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Connectivity {
    /// Face neighbours only (6 in 3D, 4 in 2D): scipy `ndimage.label`'s
    /// default.
    #[serde(rename = "6")]
    #[cfg_attr(feature = "clap", value(name = "6"))]
    Face,
    /// Face, edge and corner neighbours (26 in 3D, 8 in 2D): scikit-image
    /// `label`'s default.
    #[default]
    #[serde(rename = "26")]
    #[cfg_attr(feature = "clap", value(name = "26"))]
    Full,
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[i as usize];
        parent[i as usize] = parent[p as usize];
        i = p;
    }
    i
}

/// The largest connected component of `mask` (same row-major `shape`
/// convention as the rest of the crate). Ties are broken as
/// `np.argmax(np.bincount(skimage.measure.label(mask).flat)[1:])` does: the
/// component whose first voxel in memory order comes first wins. An empty
/// mask gives an empty mask.
pub fn largest_connected_component<M: MaskValue>(
    mask: &[M],
    shape: &[usize],
    connectivity: Connectivity,
) -> Result<Vec<bool>, EdtError> {
    let grid = Grid::new(shape, None)?;
    grid.check_len("mask", mask.len())?;
    let n = grid.len();
    if n >= u32::MAX as usize {
        return Err(EdtError::TooLarge(shape.to_vec()));
    }
    let [nz, ny, nx] = grid.dims;
    // Offsets to already visited neighbours (lexicographically negative).
    let mut offs: Vec<[isize; 3]> = Vec::new();
    for dz in -1isize..=1 {
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                let o = [dz, dy, dx];
                if o >= [0, 0, 0] {
                    continue;
                }
                let nonzero = o.iter().filter(|&&v| v != 0).count();
                if connectivity == Connectivity::Face && nonzero != 1 {
                    continue;
                }
                offs.push(o);
            }
        }
    }
    // Union-find where the root is always the smallest index, i.e. the
    // component's first voxel in memory order.
    let mut parent: Vec<u32> = (0..n as u32).collect();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                if !mask[i].is_fg() {
                    continue;
                }
                for o in &offs {
                    let (qz, qy, qx) = (z as isize + o[0], y as isize + o[1], x as isize + o[2]);
                    if qz < 0 || qy < 0 || qx < 0 || qy >= ny as isize || qx >= nx as isize {
                        continue;
                    }
                    let j = (qz as usize * ny + qy as usize) * nx + qx as usize;
                    if !mask[j].is_fg() {
                        continue;
                    }
                    let (ri, rj) = (find(&mut parent, i as u32), find(&mut parent, j as u32));
                    if ri != rj {
                        let (lo, hi) = if ri < rj { (ri, rj) } else { (rj, ri) };
                        parent[hi as usize] = lo;
                    }
                }
            }
        }
    }
    let mut size = vec![0u32; n];
    let mut best: Option<(u32, u32)> = None; // (size, root)
    for i in 0..n {
        if mask[i].is_fg() {
            let r = find(&mut parent, i as u32);
            parent[i] = r;
            size[r as usize] += 1;
        }
    }
    for i in 0..n {
        if mask[i].is_fg() && parent[i] == i as u32 {
            let s = size[i];
            if best.is_none_or(|(bs, _)| s > bs) {
                best = Some((s, i as u32));
            }
        }
    }
    let Some((_, root)) = best else {
        return Ok(vec![false; n]);
    };
    Ok((0..n)
        .map(|i| mask[i].is_fg() && parent[i] == root)
        .collect())
}
