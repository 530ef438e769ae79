//! The shapes a case is drawn from: 3-vectors, blobs (the target and
//! distractors) and tubes (attached to the target or free).

use super::*;

pub(super) type Vec3 = [f64; 3];

pub(super) fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(super) fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(super) fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub(super) fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(super) fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

pub(super) fn normalize(a: Vec3) -> Vec3 {
    let n = norm(a);
    if n > 1e-12 {
        scale(a, 1.0 / n)
    } else {
        [1.0, 0.0, 0.0]
    }
}

/// An ellipsoid whose radius is modulated by low-frequency sinusoids of
/// direction: smooth, irregular, star-shaped around its centre.
pub(super) struct Blob {
    pub(super) centre: Vec3,
    pub(super) rot: [Vec3; 3],
    pub(super) axes: Vec3,
    /// (frequency vector, amplitude, phase) of each sinusoid.
    pub(super) waves: Vec<(Vec3, f64, f64)>,
}

impl Blob {
    pub(super) fn draw(rng: &mut ChaCha8Rng, centre: Vec3, radius: f64) -> Blob {
        let rot = random_rotation(rng);
        let axes = [
            radius * uniform(rng, 0.8, 1.25),
            radius * uniform(rng, 0.8, 1.25),
            radius * uniform(rng, 0.8, 1.25),
        ];
        let count = rng.random_range(3..=5);
        let waves = (0..count)
            .map(|_| {
                let f = scale(unit_vector(rng), uniform(rng, 1.0, 3.0));
                (f, uniform(rng, 0.05, 0.1), uniform(rng, 0.0, 2.0 * PI))
            })
            .collect();
        Blob {
            centre,
            rot,
            axes,
            waves,
        }
    }

    pub(super) fn modulation(&self, dir: Vec3) -> f64 {
        1.0 + self
            .waves
            .iter()
            .map(|&(f, a, ph)| a * (dot(f, dir) + ph).sin())
            .sum::<f64>()
    }

    pub(super) fn mean_axis(&self) -> f64 {
        (self.axes[0] + self.axes[1] + self.axes[2]) / 3.0
    }

    /// Approximate signed distance (mm), negative inside.
    pub(super) fn sdf(&self, p: Vec3) -> f64 {
        let d = sub(p, self.centre);
        let q = [
            dot(self.rot[0], d) / self.axes[0],
            dot(self.rot[1], d) / self.axes[1],
            dot(self.rot[2], d) / self.axes[2],
        ];
        let rho = norm(q);
        let m = if rho > 1e-12 {
            self.modulation(scale(q, 1.0 / rho))
        } else {
            1.0
        };
        (rho - m) * self.mean_axis()
    }

    /// Largest distance of the surface from the centre.
    pub(super) fn extent(&self) -> f64 {
        let amp: f64 = self.waves.iter().map(|w| w.1).sum();
        self.axes.iter().cloned().fold(0.0, f64::max) * (1.0 + amp)
    }

    /// Where the ray from the centre along `dir` leaves the blob.
    pub(super) fn surface_point(&self, dir: Vec3) -> Vec3 {
        let q = [
            dot(self.rot[0], dir) / self.axes[0],
            dot(self.rot[1], dir) / self.axes[1],
            dot(self.rot[2], dir) / self.axes[2],
        ];
        let n = norm(q);
        let t = self.modulation(scale(q, 1.0 / n)) / n;
        add(self.centre, scale(dir, t))
    }
}

/// A curved tube: a polyline with a radius tapering from `r0` to `r1`.
pub(super) struct Tube {
    pub(super) points: Vec<Vec3>,
    pub(super) r0: f64,
    pub(super) r1: f64,
}

/// Where structures may be: the body cross-section (an elliptic cylinder
/// along z) inside the field of view.
pub(super) struct Body {
    pub(super) centre: [f64; 2],
    pub(super) axes: [f64; 2],
    pub(super) extent: Vec3,
}

impl Body {
    pub(super) fn sdf(&self, p: Vec3) -> f64 {
        let u = (p[0] - self.centre[0]) / self.axes[0];
        let v = (p[1] - self.centre[1]) / self.axes[1];
        ((u * u + v * v).sqrt() - 1.0) * self.axes[0].min(self.axes[1])
    }

    /// Whether a point lies `margin` mm inside the body and the grid.
    pub(super) fn holds(&self, p: Vec3, margin: f64) -> bool {
        self.sdf(p) < -margin && (0..3).all(|a| p[a] > margin && p[a] < self.extent[a] - margin)
    }
}

impl Tube {
    /// Grows a tube from `start` along `dir`, curving smoothly, until it
    /// reaches `length` mm or leaves the body.
    pub(super) fn grow(
        rng: &mut ChaCha8Rng,
        body: &Body,
        start: Vec3,
        dir: Vec3,
        length: f64,
        radius: f64,
    ) -> Tube {
        let step = 1.0;
        let curvature = uniform(rng, 0.02, 0.08); // rad per mm
        let mut drift = scale(unit_vector(rng), curvature);
        let mut v = normalize(dir);
        let mut p = start;
        let mut points = vec![p];
        let mut travelled = 0.0;
        while travelled < length {
            let (a, b) = gaussian_pair(rng);
            let c = gaussian(rng);
            drift = scale(
                normalize(add(drift, scale([a, b, c], 0.3 * curvature))),
                curvature,
            );
            v = normalize(add(v, scale(drift, step)));
            let next = add(p, scale(v, step));
            if !body.holds(next, radius) {
                break;
            }
            p = next;
            points.push(p);
            travelled += step;
        }
        Tube {
            points,
            r0: radius,
            r1: radius * uniform(rng, 0.7, 0.95),
        }
    }
}
