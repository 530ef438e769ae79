//! PNG pictures written next to the checkpoints: the loss and validation
//! curves (drawn with `plotters`: legend, axis titles, an optional log
//! scale), and a mid-slice overlay of image, label, prediction and the
//! students' disagreement (pixel panels, no chart needed).

use crate::error::{Result, TrainError};
use crate::log::IterationLog;
use dtml_volume::Xyz;
use std::path::Path;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
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

/// The font of the plots: DejaVu Sans cut to printable ASCII (10 kB;
/// `assets/`), so text renders the same on every machine, with no system
/// fonts needed.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");

fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(TrainError::Other(
            "the plot font could not be loaded".into(),
        ))
    }
}

/// One curve: its legend name, colour and points (iteration, value).
type Series = (String, plotters::style::RGBColor, Vec<(u64, f64)>);

/// The loss axis of [`loss_curves`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossScale {
    /// From 0 to the largest total loss.
    #[default]
    Linear,
    /// Decades, for long runs whose loss falls by orders of magnitude.
    Log,
}

fn plot_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("drawing a plot: {e}"))
}

/// Loss curves against iterations, with a legend and axis titles: the
/// total in black, each part in its colour (left axis), and validation Dice
/// in green with markers (right axis, 0..1).
pub fn loss_curves(log: &[IterationLog], path: &Path, scale: LossScale) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    let (w, h) = (900u32, 420u32);
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        // Iterations are counts: an integer axis, so no tick reads "2.5".
        let n = log.last().map_or(1, |e| e.iteration.max(1)) as u64;
        let value = |v: f64| match scale {
            LossScale::Linear => v,
            LossScale::Log => v.max(1e-12).log10(),
        };
        let finite = || {
            log.iter()
                .map(|e| e.loss)
                .filter(|v| v.is_finite() && *v > 0.0)
        };
        let (lo, hi) = match scale {
            // Headroom above the largest total, so the curve clears the frame.
            LossScale::Linear => (0.0, 1.08 * finite().fold(0.0f64, f64::max).max(1e-12)),
            LossScale::Log => {
                let parts = log.iter().flat_map(|e| e.parts.values().copied());
                let all: Vec<f64> = finite().chain(parts.filter(|v| *v > 0.0)).collect();
                let min = all.iter().copied().fold(f64::INFINITY, f64::min);
                let max = all.iter().copied().fold(0.0f64, f64::max);
                if all.is_empty() {
                    (-1.0, 0.0)
                } else {
                    (
                        value(min).floor(),
                        value(max).ceil().max(value(min).floor() + 1.0),
                    )
                }
            }
        };
        // The right (Dice) axis only for a run that validated.
        let validated = log.iter().any(|e| e.validation_dice.is_some());
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(if validated { 55 } else { 0 })
            .build_cartesian_2d(0u64..n, lo..hi)
            .map_err(plot_err)?
            .set_secondary_coord(0u64..n, 0f64..1f64);
        let decade = |v: &f64| format!("1e{v:.0}");
        let plain = |v: &f64| format!("{v:.3}");
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc(match scale {
                LossScale::Linear => "loss",
                LossScale::Log => "loss (log scale)",
            })
            .y_label_formatter(match scale {
                LossScale::Linear => &plain,
                LossScale::Log => &decade,
            })
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        if validated {
            chart
                .configure_secondary_axes()
                .y_desc("validation Dice")
                .draw()
                .map_err(plot_err)?;
        }
        let points = |f: &dyn Fn(&IterationLog) -> Option<f64>| -> Vec<(u64, f64)> {
            log.iter()
                .filter_map(|e| f(e).map(|v| (e.iteration as u64, value(v))))
                .filter(|(_, v)| v.is_finite())
                .collect()
        };
        let mut series: Vec<Series> = vec![("total".into(), BLACK, points(&|e| Some(e.loss)))];
        if let Some(last) = log.last() {
            for (i, name) in last.parts.keys().enumerate() {
                let [r, g, b] = PART_COLOURS[i % PART_COLOURS.len()];
                series.push((
                    name.clone(),
                    RGBColor(r, g, b),
                    points(&|e| e.parts.get(name).copied()),
                ));
            }
        }
        // A series without data gets no legend entry (a run that never
        // validated shows no "validation Dice").
        for (name, colour, pts) in series.into_iter().filter(|(_, _, p)| !p.is_empty()) {
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        let [r, g, b] = DICE_COLOUR;
        let green = RGBColor(r, g, b);
        let dice: Vec<(u64, f64)> = log
            .iter()
            .filter_map(|e| e.validation_dice.map(|d| (e.iteration as u64, d)))
            .collect();
        if !dice.is_empty() {
            chart
                .draw_secondary_series(LineSeries::new(dice.clone(), green.stroke_width(2)))
                .map_err(plot_err)?
                .label("validation Dice")
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, green.filled()));
            chart
                .draw_secondary_series(dice.into_iter().map(|p| Circle::new(p, 4, green.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Canvas {
        width: w as usize,
        height: h as usize,
        pixels,
    }
    .save(path)
}

/// One bar of [`error_bars`]: its label, mean and standard deviation.
pub type Bar = (String, f64, f64);

/// Means as points with `mean +- std` error bars, one column per row (the
/// study's picture: methods side by side over seeds), the value written
/// above each and its label under it; `axis` names the y axis, which spans
/// the bars (points, not filled bars, so a zoomed axis does not mislead).
/// A standard deviation that is not finite (one seed) draws no bar.
pub fn error_bars(bars: &[Bar], axis: &str, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    let n = bars.len().max(1);
    let (w, h) = ((160 * n + 120) as u32, 460u32);
    let spread = |s: f64| if s.is_finite() { s } else { 0.0 };
    let lo = bars
        .iter()
        .map(|(_, m, s)| m - spread(*s))
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let hi = bars
        .iter()
        .map(|(_, m, s)| m + spread(*s))
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        let pad = (0.15 * (hi - lo)).max(0.01);
        ((lo - pad).max(0.0), hi + pad)
    } else {
        (0.0, 1.0)
    };
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..n as f64, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc(axis)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        let [r, g, b] = PART_COLOURS[0];
        let colour = RGBColor(r, g, b);
        for (i, (label, mean, std)) in bars.iter().enumerate() {
            let x = i as f64;
            if !mean.is_finite() {
                continue;
            }
            chart
                .draw_series([Circle::new((x + 0.5, *mean), 6, colour.filled())])
                .map_err(plot_err)?;
            let (a, z) = (mean - spread(*std), mean + spread(*std));
            let bar = [(x + 0.5, a), (x + 0.5, z)];
            let caps = [[(x + 0.4, a), (x + 0.6, a)], [(x + 0.4, z), (x + 0.6, z)]];
            chart
                .draw_series(
                    std::iter::once(PathElement::new(bar.to_vec(), BLACK.stroke_width(2)))
                        .chain(caps.iter().map(|c| PathElement::new(c.to_vec(), BLACK))),
                )
                .map_err(plot_err)?;
            let style = ("sans-serif", 14).into_font().color(&BLACK);
            chart
                .draw_series([Text::new(
                    format!("{mean:.3}"),
                    (x + 0.25, z + 0.03 * (hi - lo)),
                    style.clone(),
                )])
                .map_err(plot_err)?;
            // Centred under its column, so a long label stays in the frame.
            let at = chart.backend_coord(&(x + 0.5, lo));
            use plotters::style::text_anchor::{HPos, Pos, VPos};
            let centred = style.pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(label.clone(), (at.0, at.1 + 10), centred))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Canvas {
        width: w as usize,
        height: h as usize,
        pixels,
    }
    .save(path)
}

/// Mid-z-slice panels, left to right: the image, the image with the label
/// (green), with the prediction (red), and the disagreement `|p_A - q_B|`
/// from black (0) to yellow (1). Arrays are x fastest, of `shape`.
pub fn overlay(
    image: &[f32],
    label: Option<&[u8]>,
    prediction: &[u8],
    disagreement: Option<&[f32]>,
    shape: Xyz<usize>,
    path: &Path,
) -> Result<()> {
    let [nx, ny, nz] = shape.xyz();
    let z = nz / 2;
    let slice = |k: usize| z * nx * ny + k;
    let mut values: Vec<f32> = (0..nx * ny).map(|k| image[slice(k)]).collect();
    values.sort_by(f32::total_cmp);
    let lo = values[values.len() / 100];
    let hi = values[values.len() * 99 / 100].max(lo + 1e-6);
    let scale = (256 / nx.max(ny)).clamp(1, 4);
    let (pw, ph) = (nx * scale, ny * scale);
    let mut c = Canvas::new(4 * pw + 30, ph + OVERLAY_TITLE_BAND, WHITE);
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
                            (OVERLAY_TITLE_BAND + (ny - 1 - y) * scale + dy) as i64,
                            *colour,
                        );
                    }
                }
            }
        }
    }
    title_panels(&mut c, pw, z)?;
    c.save(path)
}

/// Height of the band above the overlay's panels that holds their titles.
const OVERLAY_TITLE_BAND: usize = 18;

/// Writes each overlay panel's title in the band above it.
fn title_panels(c: &mut Canvas, panel_width: usize, z: usize) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    let titles = [
        format!("image, z = {z}"),
        "label (green)".to_string(),
        "prediction (red)".to_string(),
        "|p_A - q_B|".to_string(),
    ];
    let (w, h) = (c.width as u32, c.height as u32);
    let root = BitMapBackend::with_buffer(&mut c.pixels, (w, h)).into_drawing_area();
    let style = ("sans-serif", 13).into_font().color(&BLACK);
    for (p, title) in titles.iter().enumerate() {
        root.draw(&Text::new(
            title.as_str(),
            ((p * (panel_width + 10)) as i32 + 2, 2),
            style.clone(),
        ))
        .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)
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
        for scale in [LossScale::Linear, LossScale::Log] {
            let p = dir.path().join("curves.png");
            loss_curves(&log, &p, scale).unwrap();
            let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
            let mut reader = dec.read_info().unwrap();
            assert_eq!((reader.info().width, reader.info().height), (900, 420));
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            reader.next_frame(&mut buf).unwrap();
            // The total is drawn in black, the Dice markers in green.
            let has = |c: [u8; 3]| buf.chunks(3).any(|p| p == c);
            assert!(has([0, 0, 0]) && has(DICE_COLOUR), "{scale:?}");
        }
        // Without validation, no Dice curve and no legend entry for it.
        let unvalidated: Vec<IterationLog> = log
            .iter()
            .cloned()
            .map(|e| IterationLog {
                validation_dice: None,
                ..e
            })
            .collect();
        let p = dir.path().join("plain.png");
        loss_curves(&unvalidated, &p, LossScale::Linear).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert!(!buf.chunks(3).any(|p| p == DICE_COLOUR));
        // The study's bars: one filled bar per row, the size from the count.
        let bars: Vec<Bar> = vec![
            ("supervised".into(), 0.70, 0.03),
            ("dtml".into(), 0.80, 0.02),
            ("mean-teacher".into(), 0.75, f64::NAN),
        ];
        let p = dir.path().join("bars.png");
        error_bars(&bars, "mean test Dice", &p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (600, 460));
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert!(buf.chunks(3).any(|p| p == [0, 0, 0]));
        assert!(buf.chunks(3).any(|p| p == PART_COLOURS[0]));

        let shape = Xyz::new(16, 12, 4);
        let n = shape.voxels();
        let image: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let pred: Vec<u8> = (0..n).map(|i| (i % 3 == 0) as u8).collect();
        let p = dir.path().join("overlay.png");
        overlay(&image, Some(&pred), &pred, None, shape, &p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let reader = dec.read_info().unwrap();
        assert_eq!(
            (reader.info().width, reader.info().height),
            (4 * 64 + 30, 48 + OVERLAY_TITLE_BAND as u32)
        );
        // The titles are drawn in the band above the panels.
        let mut reader = reader;
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        let band = &buf[..OVERLAY_TITLE_BAND * (4 * 64 + 30) * 3];
        assert!(
            band.chunks(3)
                .any(|p| p[0] < 100 && p[0] == p[1] && p[1] == p[2])
        );
    }
}
