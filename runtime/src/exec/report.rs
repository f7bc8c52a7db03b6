//! The `Report` op: the live progress bar, and at the end a plot of the
//! reward (GRPO) and loss (SFT) curves of every stage, `reward.svg` in the
//! run directory, drawn from `metrics.jsonl` (the last line of a step wins,
//! so a resumed run plots each step once).

use std::collections::BTreeMap;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde_json::Value;

use super::ExecError;

/// A progress bar for a stage (`None` when `show` is off).
pub fn progress(stage: &str, total: u64, done: u64, show: bool) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(stage.to_string());
    bar.set_position(done);
    Some(bar)
}

/// Finishes a stage's bar with `message` and ends its line (a hidden bar
/// printed nothing).
pub fn finish(bar: Option<ProgressBar>, message: String) {
    if let Some(bar) = bar {
        bar.finish_with_message(message);
        if !bar.is_hidden() {
            crate::stderr_line!();
        }
    }
}

/// A stage's curve: its name, what is drawn (`reward` or `loss`) and
/// `step → value`.
type Curve = (String, (String, BTreeMap<u64, f64>));

/// Curves by stage, in the order the stages ran (first seen in the
/// metrics): `(step, value)` of `reward` or `loss`.
fn curves(metrics: &str) -> Vec<Curve> {
    let mut out: Vec<Curve> = Vec::new();
    for line in metrics.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(stage), Some(step)) = (v["stage"].as_str(), v["step"].as_u64()) else {
            continue;
        };
        let (key, value) = match v["reward"].as_f64() {
            Some(r) => ("reward", r),
            None => match v["loss"].as_f64() {
                Some(l) => ("loss", l),
                None => continue,
            },
        };
        let at = match out.iter().position(|(s, _)| s == stage) {
            Some(i) => i,
            None => {
                out.push((stage.to_string(), (key.to_string(), BTreeMap::new())));
                out.len() - 1
            }
        };
        out[at].1 .1.insert(step, value);
    }
    out
}

/// Draws `reward.svg` from the run's metrics.
///
/// # Errors
/// I/O and drawing errors.
pub fn plot(run: &Path) -> Result<(), ExecError> {
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let curves = curves(&metrics);
    if curves.is_empty() {
        return Ok(());
    }
    let path = run.join("reward.svg");
    let err = |e: &dyn std::fmt::Display| ExecError::Io {
        path: path.clone(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(&path, (800, 300 * curves.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((curves.len(), 1));
    for (area, (stage, (what, points))) in areas.iter().zip(&curves) {
        let max_step = points.keys().max().copied().unwrap_or(1).max(1);
        let (lo, hi) = points
            .values()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{stage}: {what}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1u64..max_step, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(what.as_str())
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|(s, v)| (*s, *v)), &BLUE))
            .map_err(|e| err(&e))?;
        // A moving average over 10 steps shows the trend through sampling noise.
        let values: Vec<(u64, f64)> = points.iter().map(|(s, v)| (*s, *v)).collect();
        let smooth: Vec<(u64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, (s, _))| {
                let from = i.saturating_sub(9);
                let w = &values[from..=i];
                (*s, w.iter().map(|(_, v)| v).sum::<f64>() / w.len() as f64)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(smooth, RED.stroke_width(2)))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::curves;

    /// Panels follow the order the stages ran (`warm` before `g1`), not
    /// their names; SFT stages draw the loss, GRPO ones the reward.
    #[test]
    fn curves_keep_the_order_the_stages_ran() {
        let metrics = [
            r#"{"stage":"warm","step":1,"loss":2.0}"#,
            r#"{"stage":"warm","step":2,"loss":1.5}"#,
            r#"{"stage":"g1","step":1,"reward":0.25}"#,
            "not json",
            r#"{"stage":"g1","step":2,"reward":0.5}"#,
        ]
        .join("\n");
        let c = curves(&metrics);
        let names: Vec<(&str, &str, usize)> = c
            .iter()
            .map(|(s, (what, points))| (s.as_str(), what.as_str(), points.len()))
            .collect();
        assert_eq!(names, [("warm", "loss", 2), ("g1", "reward", 2)]);
    }
}
