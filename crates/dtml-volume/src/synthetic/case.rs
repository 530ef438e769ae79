//! One synthetic case: its anatomy, the difficulty knobs, the image
//! formation (texture, bias field, noise) and the label.

use super::*;

/// The per-case effects of [`SyntheticConfig::difficulty`]; all identity at 0.
pub(super) struct Hardness {
    /// Structures' levels move this fraction of the way to the tissue's.
    pub(super) contrast_loss: f64,
    /// Exponent of the per-case gamma curve applied to the signal.
    pub(super) gamma: f64,
    /// Amplitude, period (slices) and phase of the gain wave along z.
    pub(super) wave: (f64, f64, f64),
    /// Multiplier of the bias field amplitude and of the noise level.
    pub(super) bias_gain: f64,
    pub(super) noise_gain: f64,
    /// Multiplier of the distractor volume goal.
    pub(super) distractor_gain: f64,
    /// Extra thin target tubes.
    pub(super) thin_tubes: usize,
}

impl Hardness {
    pub(super) fn draw(rng: &mut ChaCha8Rng, d: f64, slices: usize) -> Hardness {
        Hardness {
            contrast_loss: d * uniform(rng, 0.3, 0.5),
            gamma: (d * 0.3 * gaussian(rng)).exp(),
            wave: (
                d * uniform(rng, 0.05, 0.12),
                slices as f64 * uniform(rng, 0.5, 1.5),
                uniform(rng, 0.0, 2.0 * PI),
            ),
            bias_gain: 1.0 + 1.5 * d,
            noise_gain: 1.0 + d,
            distractor_gain: 1.0 + d,
            thin_tubes: if d > 0.0 {
                (d * uniform(rng, 1.0, 3.0)).round().max(1.0) as usize
            } else {
                0
            },
        }
    }
}

/// Everything drawn for one case before the intensities are computed.
pub(super) struct Case {
    pub(super) grid: Grid,
    pub(super) affine: [[f64; 4]; 4],
    pub(super) body: Body,
    pub(super) fields: Fields,
    pub(super) target_intensity: f64,
    pub(super) distractor_blobs: usize,
    pub(super) distractor_tubes: usize,
    pub(super) tissue: f64,
    pub(super) noise_sigma: f64,
    pub(super) bias_coeffs: [f64; 9],
    pub(super) hardness: Hardness,
}

impl Case {
    pub(super) fn draw(
        rng: &mut ChaCha8Rng,
        hard: &mut ChaCha8Rng,
        config: &SyntheticConfig,
    ) -> Case {
        let hardness = Hardness::draw(hard, config.difficulty, config.shape[2]);
        let shape = config.shape.xyz();
        let spacing: Vec3 = std::array::from_fn(|a| {
            let s = config.spacing[a] * uniform(rng, 0.95, 1.05);
            // Round to 0.01 mm (keeping it positive) so headers read back cleanly.
            ((s * 100.0).round() / 100.0).max(config.spacing[a].min(0.01))
        });
        let grid = Grid { shape, spacing };
        let extent: Vec3 = std::array::from_fn(|a| shape[a] as f64 * spacing[a]);
        // LPS-like: x and y run right-to-left and anterior-to-posterior, as
        // scanners often store them; the grid centre lies near world zero.
        let mut affine = identity();
        let signs = [-1.0, -1.0, 1.0];
        for a in 0..3 {
            affine[a][a] = signs[a] * spacing[a];
            let half = (shape[a] as f64 - 1.0) / 2.0 * spacing[a];
            let jitter = uniform(rng, -10.0, 10.0);
            affine[a][3] = ((-signs[a] * half + jitter) * 100.0).round() / 100.0;
        }

        let body = Body {
            centre: [
                extent[0] / 2.0 + uniform(rng, -0.02, 0.02) * extent[0],
                extent[1] / 2.0 + uniform(rng, -0.02, 0.02) * extent[1],
            ],
            axes: [
                extent[0] * uniform(rng, 0.42, 0.47),
                extent[1] * uniform(rng, 0.42, 0.47),
            ],
            extent,
        };
        let pixel = spacing[0].min(spacing[1]);
        let min_ext = extent.iter().cloned().fold(f64::INFINITY, f64::min);
        let geo_ext = (extent[0] * extent[1] * extent[2]).cbrt();
        let radius = (geo_ext * uniform(rng, 0.19, 0.23)).min(min_ext * 0.27);

        let mut fields = Fields::new(shape.iter().product());
        let centre = std::array::from_fn(|a| extent[a] * (0.5 + uniform(rng, -0.06, 0.06)));
        let target = Blob::draw(rng, centre, radius);
        let target_intensity = uniform(rng, 0.9, 1.0);
        grid.splat_blob(&target, &mut fields.target, None);
        for _ in 0..rng.random_range(1..=3) {
            let dir = unit_vector(rng);
            let surface = target.surface_point(dir);
            let r = pixel * uniform(rng, 1.5, 3.0);
            // Start inside the blob so the tube is attached to it.
            let start = sub(surface, scale(dir, 2.0 * r));
            let length = min_ext * uniform(rng, 0.25, 0.45);
            let tube = Tube::grow(rng, &body, start, dir, length, r);
            grid.splat_tube(&tube, &mut fields.target, None);
        }
        for _ in 0..hardness.thin_tubes {
            let dir = unit_vector(hard);
            let surface = target.surface_point(dir);
            let r = pixel * uniform(hard, 0.8, 1.5);
            let start = sub(surface, scale(dir, 2.0 * r));
            let length = min_ext * uniform(hard, 0.2, 0.4);
            let tube = Tube::grow(hard, &body, start, dir, length, r);
            grid.splat_tube(&tube, &mut fields.target, None);
        }

        // Distractors until they cover about as much as the target: the
        // first blob and the first tube usually pressed against it, then
        // more blobs (at most 3, sized to what is missing) and tubes (at
        // most 5), free or leaving a blob.
        let voxel = spacing[0] * spacing[1] * spacing[2];
        let goal = (fields.target_voxels() as f64
            * uniform(rng, 0.8, 1.1)
            * hardness.distractor_gain) as usize;
        let mut blobs: Vec<Blob> = Vec::new();
        let mut tubes = 0;
        let mut covered = 0;
        for step in 0..12 {
            let intensity = target_intensity * uniform(rng, 0.9, 1.1);
            let level = Some((fields.level.as_mut_slice(), intensity as f32));
            let want_blob = step == 0 || (step > 1 && blobs.len() < 3 && step % 2 == 0);
            if want_blob {
                // A sphere of the missing volume, spread over the blobs
                // still to come, within sensible bounds.
                let missing =
                    goal.saturating_sub(covered) as f64 * voxel / (3 - blobs.len().min(2)) as f64;
                let r = (missing * 3.0 / (4.0 * PI)).cbrt() * uniform(rng, 1.0, 1.2);
                let r = r.clamp(0.45 * radius, 0.85 * radius);
                let near = step == 0 && rng.random_bool(0.8);
                // Free places first; when the target leaves no room, beside it.
                let placed = (0..48).find_map(|attempt| {
                    let c = if near || attempt >= 24 {
                        let dir = unit_vector(rng);
                        add(target.surface_point(dir), scale(dir, r * 0.9 + GAP_MM))
                    } else {
                        std::array::from_fn(|a| extent[a] * uniform(rng, 0.12, 0.88))
                    };
                    let clear = target.sdf(c) > r + GAP_MM
                        && blobs
                            .iter()
                            .all(|o| norm(sub(o.centre, c)) > o.extent() + r);
                    (clear && body.holds(c, r * 0.5)).then_some(c)
                });
                if let Some(c) = placed {
                    let blob = Blob::draw(rng, c, r);
                    grid.splat_blob(&blob, &mut fields.distractor, level);
                    blobs.push(blob);
                }
            } else if tubes < 5 {
                let r = pixel * uniform(rng, 1.5, 3.0);
                let length = min_ext * uniform(rng, 0.3, 0.6);
                let choice = rng.random_range(0..3);
                let (start, dir) = if step == 1 || choice == 0 {
                    // Along the target's surface, a few mm away from it.
                    let n = unit_vector(rng);
                    let start = add(target.surface_point(n), scale(n, r + GAP_MM + 1.0));
                    let w = unit_vector(rng);
                    (start, normalize(sub(w, scale(n, dot(n, w)))))
                } else if choice == 1 && !blobs.is_empty() {
                    let blob = &blobs[rng.random_range(0..blobs.len())];
                    let dir = unit_vector(rng);
                    (sub(blob.surface_point(dir), scale(dir, 2.0 * r)), dir)
                } else {
                    let p = std::array::from_fn(|a| extent[a] * uniform(rng, 0.15, 0.85));
                    (p, unit_vector(rng))
                };
                let tube = Tube::grow(rng, &body, start, dir, length, r);
                grid.splat_tube(&tube, &mut fields.distractor, level);
                tubes += 1;
            }
            covered = fields.distractor_voxels();
            if !blobs.is_empty() && tubes >= 2 && covered >= goal {
                break;
            }
        }

        let tissue = uniform(rng, 0.4, 0.5);
        let noise_sigma = uniform(rng, 0.04, 0.07);
        let mut bias_coeffs = [0.0; 9];
        for (i, c) in bias_coeffs.iter_mut().enumerate() {
            *c = gaussian(rng) * if i < 3 { 1.0 } else { 0.5 };
        }
        Case {
            grid,
            affine,
            body,
            fields,
            target_intensity,
            distractor_blobs: blobs.len(),
            distractor_tubes: tubes,
            tissue,
            noise_sigma: noise_sigma * hardness.noise_gain,
            bias_coeffs,
            hardness,
        }
    }

    /// The multiplicative bias at normalised coordinates `u` in [-1, 1]^3,
    /// before scaling to its amplitude.
    pub(super) fn bias_raw(&self, u: Vec3) -> f64 {
        let c = &self.bias_coeffs;
        c[0] * u[0]
            + c[1] * u[1]
            + c[2] * u[2]
            + c[3] * u[0] * u[1]
            + c[4] * u[0] * u[2]
            + c[5] * u[1] * u[2]
            + c[6] * (u[0] * u[0] - 1.0 / 3.0)
            + c[7] * (u[1] * u[1] - 1.0 / 3.0)
            + c[8] * (u[2] * u[2] - 1.0 / 3.0)
    }

    /// Computes the image (i16) and label (u8) voxels.
    pub(super) fn render(&self, rng: &mut ChaCha8Rng) -> (Vec<i16>, Vec<u8>) {
        let extent = self.body.extent;
        let coarse = ValueNoise::new(rng, extent, 16.0);
        let fine = ValueNoise::new(rng, extent, 6.0);
        let amplitude = uniform(rng, 0.2, 0.3) * self.hardness.bias_gain;
        // Scale the bias polynomial so its largest excursion is `amplitude`.
        let mut peak: f64 = 1e-9;
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..5 {
                    let u = [a, b, c].map(|v| v as f64 / 2.0 - 1.0);
                    peak = peak.max(self.bias_raw(u).abs());
                }
            }
        }
        let bias_scale = amplitude / peak;
        // Partial-volume band: a structure fills a voxel gradually over
        // about one in-plane voxel across its boundary.
        let spacing = self.grid.spacing;
        let band = spacing[0].min(spacing[1]);
        let occupancy = |d: f64| (0.5 - d / band).clamp(0.0, 1.0);
        let [nx, ny, nz] = self.grid.shape;
        let n = nx * ny * nz;
        let mut image = Vec::with_capacity(n);
        let mut label = Vec::with_capacity(n);
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let idx = i + nx * (j + ny * k);
                    let p = self.grid.point(i, j, k);
                    let body = occupancy(self.body.sdf(p));
                    let texture_fine = fine.sample(p);
                    let tissue =
                        self.tissue * (1.0 + 0.22 * coarse.sample(p) + 0.1 * texture_fine) * body;
                    let dt = self.fields.target[idx] as f64;
                    let dd = self.fields.carved(idx) as f64;
                    let (o, level) = if dt <= dd {
                        (occupancy(dt), self.target_intensity)
                    } else {
                        (occupancy(dd), self.fields.level[idx] as f64)
                    };
                    let h = &self.hardness;
                    let level = level + (self.tissue - level) * h.contrast_loss;
                    let structure = level * (1.0 + 0.04 * texture_fine);
                    let u: Vec3 = std::array::from_fn(|a| {
                        2.0 * p[a] / (extent[a] - spacing[a]).max(1e-9) - 1.0
                    });
                    let bias = (1.0 + bias_scale * self.bias_raw(u)).clamp(0.5, 1.5);
                    let mut signal = bias * ((1.0 - o) * tissue + o * structure);
                    if h.gamma != 1.0 || h.wave.0 != 0.0 {
                        let (amp, period, phase) = h.wave;
                        let wave = 1.0 + amp * (2.0 * PI * k as f64 / period + phase).sin();
                        signal = signal.max(0.0).powf(h.gamma) * wave;
                    }
                    let (n1, n2) = gaussian_pair(rng);
                    let (n1, n2) = (n1 * self.noise_sigma, n2 * self.noise_sigma);
                    let magnitude = ((signal + n1).powi(2) + n2 * n2).sqrt();
                    image.push((magnitude * INTENSITY_SCALE).round().clamp(0.0, 32767.0) as i16);
                    label.push(u8::from(dt <= 0.0));
                }
            }
        }
        (image, label)
    }
}

/// Smooth random field: uniform values on a lattice of `cell` mm,
/// interpolated with smoothstep weights. Values lie in [-1, 1].
pub(super) struct ValueNoise {
    pub(super) dims: [usize; 3],
    pub(super) cell: f64,
    pub(super) values: Vec<f32>,
}

impl ValueNoise {
    pub(super) fn new(rng: &mut ChaCha8Rng, extent: Vec3, cell: f64) -> ValueNoise {
        let dims = extent.map(|e| (e / cell).ceil() as usize + 2);
        let values = (0..dims.iter().product::<usize>())
            .map(|_| uniform(rng, -1.0, 1.0) as f32)
            .collect();
        ValueNoise { dims, cell, values }
    }

    pub(super) fn sample(&self, p: Vec3) -> f64 {
        let mut base = [0usize; 3];
        let mut w = [0.0f64; 3];
        for a in 0..3 {
            let g = (p[a] / self.cell).max(0.0);
            let i = (g.floor() as usize).min(self.dims[a] - 2);
            let f = (g - i as f64).clamp(0.0, 1.0);
            base[a] = i;
            w[a] = f * f * (3.0 - 2.0 * f);
        }
        let [dx, dy, _] = self.dims;
        let at = |i: usize, j: usize, k: usize| self.values[i + dx * (j + dy * k)] as f64;
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let [i, j, k] = base;
        let c00 = lerp(at(i, j, k), at(i + 1, j, k), w[0]);
        let c10 = lerp(at(i, j + 1, k), at(i + 1, j + 1, k), w[0]);
        let c01 = lerp(at(i, j, k + 1), at(i + 1, j, k + 1), w[0]);
        let c11 = lerp(at(i, j + 1, k + 1), at(i + 1, j + 1, k + 1), w[0]);
        lerp(lerp(c00, c10, w[1]), lerp(c01, c11, w[1]), w[2])
    }
}
