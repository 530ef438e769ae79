//! Per-case segmentation metrics with their summary, as a text table, JSON
//! and CSV (what `dtml metrics` and `dtml evaluate` print and write). CSV
//! goes through the `csv` crate (quoting, any case name) and the table
//! through `comfy-table`.

use crate::error::{InferError, Result};
use dtml_edt::{
    EmptyScoring, MeanStd, SegmentationMetrics, Summary, SurfaceDistances, Units, summarize,
};
use serde_json::{Value, json};

/// Scored cases and their summary.
pub struct Report {
    pub rows: Vec<(String, SegmentationMetrics)>,
    pub summary: Summary,
    pub units: Units,
    pub scoring: EmptyScoring,
    /// The tolerance of the rows' surface Dice, when they have one: the
    /// table, CSV and JSON then carry it as a column.
    pub surface_dice_tolerance: Option<f64>,
}

impl Report {
    pub fn new(
        rows: Vec<(String, SegmentationMetrics)>,
        units: Units,
        scoring: EmptyScoring,
    ) -> Report {
        let metrics: Vec<SegmentationMetrics> = rows.iter().map(|(_, m)| *m).collect();
        Report {
            summary: summarize(&metrics, scoring),
            rows,
            units,
            scoring,
            surface_dice_tolerance: None,
        }
    }

    /// The surface Dice column's name: `surface_dice_<tolerance><units>`.
    fn surface_dice_column(&self) -> Option<String> {
        self.surface_dice_tolerance
            .map(|t| format!("surface_dice_{t}{}", self.units))
    }

    pub fn to_json(&self) -> Value {
        let s = &self.summary;
        let cases: Vec<_> = self
            .rows
            .iter()
            .map(|(name, m)| {
                let d = m.distances.computed();
                json!({
                    "case": name, "status": status(m), "dice": m.dice, "jaccard": m.jaccard,
                    "hd95": d.map(|d| d.hd95), "asd": d.map(|d| d.asd), "assd": d.map(|d| d.assd),
                    "assd_mean_of_means": d.map(|d| d.assd_mean_of_means),
                    "prediction_voxels": m.prediction_voxels, "reference_voxels": m.reference_voxels,
                })
            })
            .collect();
        let ms = |m: MeanStd| json!({"mean": finite(m.mean), "std": finite(m.std), "n": m.n});
        let mut cases = cases;
        let mut summary = json!({
            "cases": s.cases, "dice": ms(s.dice), "jaccard": ms(s.jaccard), "hd95": ms(s.hd95),
            "asd": ms(s.asd), "assd": ms(s.assd), "empty_prediction": s.empty_prediction,
            "empty_reference": s.empty_reference, "both_empty": s.both_empty,
        });
        if self.surface_dice_tolerance.is_some() {
            for (case, (_, m)) in cases.iter_mut().zip(&self.rows) {
                case["surface_dice"] = json!(m.surface_dice);
            }
            summary["surface_dice"] = ms(s.surface_dice);
        }
        json!({
            "units": self.units,
            "empty_scoring": self.scoring,
            "surface_dice_tolerance": self.surface_dice_tolerance,
            "cases": cases,
            "summary": summary,
        })
    }

    /// The `mean` and `std` rows over Dice, Jaccard, hd95, ASD, ASSD and
    /// the surface Dice when there is one (`None` where no case contributed).
    fn summary_rows(&self) -> [(&'static str, Vec<Option<f64>>); 2] {
        let s = &self.summary;
        let mut columns = vec![s.dice, s.jaccard, s.hd95, s.asd, s.assd];
        if self.surface_dice_tolerance.is_some() {
            columns.push(s.surface_dice);
        }
        let row = |std: bool| {
            columns
                .iter()
                .map(|m: &MeanStd| (m.n > 0).then_some(if std { m.std } else { m.mean }))
                .collect()
        };
        [("mean", row(false)), ("std", row(true))]
    }

    /// One row per case, then `mean` and `std` rows; empty fields where a
    /// metric is undefined.
    pub fn to_csv(&self) -> Result<String> {
        let u = self.units;
        let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        let mut w = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| InferError::Other(format!("writing CSV: {e}"));
        let column = self.surface_dice_column();
        let mut header = vec![
            "case".to_string(),
            "status".into(),
            "dice".into(),
            "jaccard".into(),
            format!("hd95_{u}"),
            format!("asd_{u}"),
            format!("assd_{u}"),
        ];
        header.extend(column.clone());
        header.extend(["prediction_voxels".into(), "reference_voxels".into()]);
        w.write_record(header).map_err(csv_err)?;
        for (name, m) in &self.rows {
            let d = m.distances.computed();
            let mut row = vec![
                name.clone(),
                status(m).into(),
                f(m.dice),
                f(m.jaccard),
                f(d.map(|d| d.hd95)),
                f(d.map(|d| d.asd)),
                f(d.map(|d| d.assd)),
            ];
            if column.is_some() {
                row.push(f(m.surface_dice));
            }
            row.extend([
                m.prediction_voxels.to_string(),
                m.reference_voxels.to_string(),
            ]);
            w.write_record(row).map_err(csv_err)?;
        }
        for (label, values) in self.summary_rows() {
            let mut row = vec![label.to_string(), String::new()];
            row.extend(values.into_iter().map(f));
            row.extend([String::new(), String::new()]);
            w.write_record(row).map_err(csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| InferError::Other(format!("writing CSV: {e}")))?;
        String::from_utf8(bytes).map_err(|e| InferError::Other(e.to_string()))
    }

    /// The table `dtml metrics` prints: a row per case, mean and std, and a
    /// line on empty masks when there were any.
    pub fn table(&self) -> String {
        let unit = self.units;
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut t = comfy_table::Table::new();
        let mut header = vec![
            "case".to_string(),
            "dice".into(),
            "jaccard".into(),
            format!("hd95 {unit}"),
            format!("asd {unit}"),
            format!("assd {unit}"),
        ];
        let surface = self.surface_dice_tolerance.is_some();
        if let Some(t) = self.surface_dice_tolerance {
            header.push(format!("sdice@{t}{unit}"));
        }
        header.push("status".into());
        t.load_preset(comfy_table::presets::NOTHING)
            .set_header(header);
        for (name, m) in &self.rows {
            let d = m.distances.computed();
            let mut row = vec![
                name.clone(),
                f(m.dice),
                f(m.jaccard),
                f(d.map(|d| d.hd95)),
                f(d.map(|d| d.asd)),
                f(d.map(|d| d.assd)),
            ];
            if surface {
                row.push(f(m.surface_dice));
            }
            row.push(status(m).into());
            t.add_row(row);
        }
        for (label, values) in self.summary_rows() {
            let mut row = vec![label.to_string()];
            row.extend(values.into_iter().map(f));
            row.push(String::new());
            t.add_row(row);
        }
        let s = &self.summary;
        for c in 1..(6 + usize::from(surface)) {
            if let Some(col) = t.column_mut(c) {
                col.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        let mut out = t.to_string();
        if s.empty_prediction + s.empty_reference + s.both_empty > 0 {
            out += &format!(
                "\nempty: {} prediction(s), {} reference(s), {} both; {}",
                s.empty_prediction,
                s.empty_reference,
                s.both_empty,
                match self.scoring {
                    EmptyScoring::Reference => "empty predictions scored 0 (reference scoring)",
                    EmptyScoring::Exclude => "left out of the distance means",
                }
            );
        }
        out
    }
}

/// How a case's distances came out.
pub fn status(m: &SegmentationMetrics) -> &'static str {
    match m.distances {
        SurfaceDistances::Computed(_) => "ok",
        SurfaceDistances::EmptyPrediction => "empty prediction",
        SurfaceDistances::EmptyReference => "empty reference",
        SurfaceDistances::BothEmpty => "both empty",
    }
}

/// NaN (no case contributed) as JSON null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtml_edt::{Units, surface_metrics};

    #[test]
    fn csv_and_json_carry_every_case_and_the_summary() {
        let a: Vec<u8> = (0..64).map(|i| (i % 8 < 4 && i / 8 < 4) as u8).collect();
        let b: Vec<u8> = (0..64).map(|i| (i % 8 < 5 && i / 8 < 4) as u8).collect();
        let m = surface_metrics(&a, &b, &[1, 8, 8], &[1.0; 3], Units::Voxels).unwrap();
        let e = surface_metrics(&[0u8; 64], &b, &[1, 8, 8], &[1.0; 3], Units::Voxels).unwrap();
        let r = Report::new(
            vec![("a,1".into(), m), ("e".into(), e)],
            Units::Voxels,
            EmptyScoring::Exclude,
        );
        let csv = r.to_csv().unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("case,status,dice,jaccard,hd95_voxels"));
        assert!(lines[1].starts_with("\"a,1\",ok,0.888"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("e,empty prediction,0,0,,,"),
            "{}",
            lines[2]
        );
        assert!(lines[3].starts_with("mean,,0.444"), "{}", lines[3]);
        let j = r.to_json();
        assert_eq!(j["summary"]["empty_prediction"], 1);
        assert_eq!(j["summary"]["hd95"]["n"], 1);
        assert_eq!(j["cases"][1]["hd95"], Value::Null);
        assert_eq!(j["units"], "voxels");
        let table = r.table();
        assert!(
            table.contains("hd95 voxels") && table.contains("a,1"),
            "{table}"
        );
        assert!(table.contains("empty: 1 prediction(s)"), "{table}");
    }
}
