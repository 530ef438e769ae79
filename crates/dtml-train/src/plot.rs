//! PNG pictures written next to the checkpoints: the loss and validation
//! curves, and a mid-slice overlay of image, label, prediction and the
//! students' disagreement. Drawn pixel by pixel: no plotting stack needed.

use crate::error::{Result, TrainError};
use crate::log::IterationLog;
use std::path::Path;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const GREY: Rgb = [200, 200, 200];
const BLACK: Rgb = [0, 0, 0];
/// Colours of the loss parts, in name order; validation Dice is green.
const PART_COLOURS: [Rgb; 5] = [
    [31, 119, 180],
    [255, 127, 14],
    [148, 103, 189],
    [214, 39, 40],
    [140, 86, 75],
];
const DICE_COLOUR: Rgb = [44, 160, 44];

/// An RGB image.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Canvas {
        Canvas {
            width,
            height,
            pixels: background.repeat(width * height),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = 3 * (y as usize * self.width + x as usize);
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line by Bresenham's algorithm.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in a 3x5 pixel font (digits, '.', '-', 'e'), scaled.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(
                                    x + (k as i64 * 4 + col) * scale + dx,
                                    y + r as i64 * scale + dy,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Encodes as PNG and writes atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| TrainError::file(path, e))?;
            w.write_image_data(&self.pixels)
                .map_err(|e| TrainError::file(path, e))?;
        }
        crate::atomic_write(path, &bytes)
    }
}

fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [7, 5, 7, 4, 7],
        _ => [0; 5],
    }
}

/// Loss curves (total in black, parts in colour, left axis from 0 to the
/// largest total) and validation Dice (green, right axis 0..1) against
/// iterations. The axis maxima are printed at the axis ends.
pub fn loss_curves(log: &[IterationLog], path: &Path) -> Result<()> {
    let (w, h, left, right, top, bottom) = (900i64, 420i64, 60i64, 40i64, 20i64, 40i64);
    let mut c = Canvas::new(w as usize, h as usize, WHITE);
    let (x0, x1, y0, y1) = (left, w - right, h - bottom, top);
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * k / 4;
        c.line((x0, y), (x1, y), GREY);
    }
    c.line((x0, y0), (x1, y0), BLACK);
    c.line((x0, y0), (x0, y1), BLACK);
    c.line((x1, y0), (x1, y1), DICE_COLOUR);
    let Some(last) = log.last() else {
        return c.save(path);
    };
    let n = last.iteration.max(1) as f64;
    let ymax = log
        .iter()
        .map(|e| e.loss)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let px = |it: usize| x0 + ((x1 - x0) as f64 * it as f64 / n).round() as i64;
    let py = |v: f64, max: f64| y0 - ((y0 - y1) as f64 * (v / max).clamp(0.0, 1.0)).round() as i64;
    let names: Vec<&String> = last.parts.keys().collect();
    let mut series: Vec<(Rgb, Vec<(usize, f64)>)> =
        vec![(BLACK, log.iter().map(|e| (e.iteration, e.loss)).collect())];
    for (i, name) in names.iter().enumerate() {
        series.push((
            PART_COLOURS[i % PART_COLOURS.len()],
            log.iter()
                .filter_map(|e| e.parts.get(*name).map(|v| (e.iteration, *v)))
                .collect(),
        ));
    }
    for (colour, points) in &series {
        for pair in points.windows(2) {
            c.line(
                (px(pair[0].0), py(pair[0].1, ymax)),
                (px(pair[1].0), py(pair[1].1, ymax)),
                *colour,
            );
        }
    }
    let dice: Vec<(usize, f64)> = log
        .iter()
        .filter_map(|e| e.validation_dice.map(|d| (e.iteration, d)))
        .collect();
    for pair in dice.windows(2) {
        c.line(
            (px(pair[0].0), py(pair[0].1, 1.0)),
            (px(pair[1].0), py(pair[1].1, 1.0)),
            DICE_COLOUR,
        );
    }
    for (it, d) in &dice {
        for dx in -2..=2 {
            for dy in -2..=2 {
                c.set(px(*it) + dx, py(*d, 1.0) + dy, DICE_COLOUR);
            }
        }
    }
    c.text(4, y1, &format!("{ymax:.3}"), 2, BLACK);
    c.text(4, y0 - 10, "0", 2, BLACK);
    c.text(x1 - 40, y0 + 8, &format!("{}", last.iteration), 2, BLACK);
    c.text(x1 + 6, y1, "1", 2, DICE_COLOUR);
    c.save(path)
}

/// Mid-z-slice panels, left to right: the image, the image with the label
/// (green), with the prediction (red), and the disagreement `|p_A - q_B|`
/// from black (0) to yellow (1). Arrays are x fastest, of `shape` (x, y, z).
pub fn overlay(
    image: &[f32],
    label: Option<&[u8]>,
    prediction: &[u8],
    disagreement: Option<&[f32]>,
    shape: [usize; 3],
    path: &Path,
) -> Result<()> {
    let [nx, ny, nz] = shape;
    let z = nz / 2;
    let slice = |k: usize| z * nx * ny + k;
    let mut values: Vec<f32> = (0..nx * ny).map(|k| image[slice(k)]).collect();
    values.sort_by(f32::total_cmp);
    let lo = values[values.len() / 100];
    let hi = values[values.len() * 99 / 100].max(lo + 1e-6);
    let scale = (256 / nx.max(ny)).clamp(1, 4);
    let (pw, ph) = (nx * scale, ny * scale);
    let mut c = Canvas::new(4 * pw + 30, ph, WHITE);
    for y in 0..ny {
        for x in 0..nx {
            let k = y * nx + x;
            let g = (((image[slice(k)] - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
            let grey = [g, g, g];
            let with = |on: bool, tint: Rgb| {
                if on {
                    std::array::from_fn(|i| ((grey[i] as u16 + tint[i] as u16) / 2) as u8)
                } else {
                    grey
                }
            };
            let d = disagreement.map_or(0.0, |d| d[slice(k)].clamp(0.0, 1.0));
            let heat: Rgb = [(255.0 * (2.0 * d).min(1.0)) as u8, (255.0 * d) as u8, 0];
            let panels = [
                grey,
                with(label.is_some_and(|l| l[slice(k)] != 0), [0, 255, 0]),
                with(prediction[slice(k)] != 0, [255, 0, 0]),
                heat,
            ];
            for (p, colour) in panels.iter().enumerate() {
                for dy in 0..scale {
                    for dx in 0..scale {
                        // Image rows go up in y: draw y = 0 at the bottom.
                        c.set(
                            (p * (pw + 10) + x * scale + dx) as i64,
                            ((ny - 1 - y) * scale + dy) as i64,
                            *colour,
                        );
                    }
                }
            }
        }
    }
    c.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_valid_pngs_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let log: Vec<IterationLog> = (1..=20)
            .map(|i| IterationLog {
                iteration: i,
                loss: 1.0 / i as f64,
                parts: [("a".to_string(), 0.5 / i as f64)].into(),
                lambda: 0.1,
                lr: 0.01,
                seconds: 0.1,
                validation_dice: (i % 5 == 0).then_some(i as f64 / 20.0),
            })
            .collect();
        let p = dir.path().join("curves.png");
        loss_curves(&log, &p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (900, 420));

        let shape = [16, 12, 4];
        let n = 16 * 12 * 4;
        let image: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let pred: Vec<u8> = (0..n).map(|i| (i % 3 == 0) as u8).collect();
        let p = dir.path().join("overlay.png");
        overlay(&image, Some(&pred), &pred, None, shape, &p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let reader = dec.read_info().unwrap();
        assert_eq!(
            (reader.info().width, reader.info().height),
            (4 * 64 + 30, 48)
        );
    }
}
