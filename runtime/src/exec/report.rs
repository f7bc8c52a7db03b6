//! The `Report` op: the live progress bar, and at the end a plot of the
//! reward (GRPO) and loss (SFT) curves of every stage, `reward.svg` in the
//! run directory, drawn from `metrics.jsonl` (the last line of a step wins,
//! so a resumed run plots each step once).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde_json::Value;

use super::ExecError;

/// Seconds between two plain progress lines (stderr not a terminal).
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// A stage's progress: a live bar on a terminal; where stderr is not one
/// (a log file, a cluster job's output) a plain line at the first step,
/// then at most one every [`PLAIN_EVERY`], and at the last step, so that a
/// long job's log shows it advancing without a line per step. Nothing at
/// all with `--no-progress`.
pub struct Progress {
    stage: String,
    total: u64,
    done: u64,
    bar: Option<ProgressBar>,
    /// Plain lines: when the last one was printed (`None`: none yet).
    plain: Option<Option<Instant>>,
    started: Instant,
    steps_since_start: u64,
}

impl Progress {
    /// The progress of `stage`, `done` of its `total` steps run, shown
    /// as a bar when stderr is a terminal, else as plain lines.
    pub fn new(stage: &str, total: u64, done: u64, show: bool) -> Self {
        use std::io::IsTerminal;
        Self::on(stage, total, done, show, std::io::stderr().is_terminal())
    }

    /// [`Progress::new`], told whether stderr is a terminal.
    fn on(stage: &str, total: u64, done: u64, show: bool, terminal: bool) -> Self {
        let bar = (show && terminal).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(stage.to_string());
            bar.set_position(done);
            bar
        });
        // A terminal indicatif cannot draw on (`TERM=dumb`) gets lines too.
        let bar = bar.filter(|b| !b.is_hidden());
        let plain = (show && bar.is_none()).then_some(None);
        Progress {
            stage: stage.to_string(),
            total,
            done,
            bar,
            plain,
            started: Instant::now(),
            steps_since_start: 0,
        }
    }

    /// The live bar, for warnings to print above it.
    pub fn bar(&self) -> Option<&ProgressBar> {
        self.bar.as_ref()
    }

    /// One step done; `message` says how it went (`reward 0.41 ...`).
    pub fn step(&mut self, message: String) {
        self.done += 1;
        self.steps_since_start += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(message);
            bar.inc(1);
            return;
        }
        let Some(last) = self.plain else {
            return;
        };
        let due = last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) || self.done >= self.total;
        if due {
            crate::stderr_line!("{}", self.plain_line(&message));
            self.plain = Some(Some(Instant::now()));
        }
    }

    /// `stage: step 3/20, reward 0.41 ..., eta 40s`.
    fn plain_line(&self, message: &str) -> String {
        let per_step = self.started.elapsed().as_secs_f64() / self.steps_since_start.max(1) as f64;
        let left = self.total.saturating_sub(self.done) as f64 * per_step;
        let eta = if self.done >= self.total {
            String::new()
        } else {
            format!(
                ", eta {}",
                indicatif::HumanDuration(Duration::from_secs_f64(left))
            )
        };
        format!(
            "{}: step {}/{}, {message}{eta}",
            self.stage, self.done, self.total
        )
    }

    /// Finishes the stage with `message` (the bar's last state; no plain
    /// line: the last step printed one).
    pub fn finish(self, message: String) {
        if let Some(bar) = self.bar {
            bar.finish_with_message(message);
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

/// Decimals that tell apart the ticks of an axis spanning `span` (about
/// ten ticks), from 0 to 6.
fn tick_decimals(span: f64) -> usize {
    let step = span / 10.0;
    if step.is_finite() && step > 0.0 {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        3
    }
}

/// An axis tick's label: `decimals` places, trailing zeros dropped, and
/// no `-0` for a value that rounds to zero.
fn tick_label(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
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
        let decimals = tick_decimals(hi - lo + 2.0 * pad);
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
            .y_label_formatter(&|v| tick_label(*v, decimals))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|(s, v)| (*s, *v)), &BLUE))
            .map_err(|e| err(&e))?
            .label("each step")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
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
            .map_err(|e| err(&e))?
            .label("mean of the last 10 steps")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::{curves, tick_decimals, tick_label, Progress};

    /// Without a terminal, progress is plain lines: the first step's and
    /// the last's, none in between within 10 s; with `show` off, none.
    #[test]
    fn plain_progress_lines_name_the_step_and_what_is_left() {
        let mut progress = Progress::on("t", 3, 0, true, false);
        assert!(progress.bar().is_none());
        assert!(progress.plain.is_some());
        progress.step("reward 0.100".into());
        let first = progress.plain;
        assert!(matches!(first, Some(Some(_))));
        assert!(progress
            .plain_line("reward 0.2")
            .starts_with("t: step 1/3, reward 0.2, eta "));
        progress.step("reward 0.200".into());
        assert_eq!(progress.plain, first, "a second line within 10 s");
        progress.step("reward 0.300".into());
        assert_ne!(progress.plain, first, "the last step prints");
        assert_eq!(progress.plain_line("reward 0.3"), "t: step 3/3, reward 0.3");
        let quiet = Progress::on("t", 3, 0, false, false);
        assert!(quiet.bar().is_none() && quiet.plain.is_none());
    }

    /// Ticks read as numbers: no `-0` (a helper saw one on a reward axis),
    /// no trailing zeros, enough places to tell ticks apart.
    #[test]
    fn tick_labels_are_plain_numbers() {
        assert_eq!(tick_label(-0.00001, 2), "0");
        assert_eq!(tick_label(-0.0, 1), "0");
        assert_eq!(tick_label(0.25, 3), "0.25");
        assert_eq!(tick_label(-0.5, 1), "-0.5");
        assert_eq!(tick_label(120.0, 0), "120");
        assert_eq!(tick_decimals(1.0), 1);
        assert_eq!(tick_decimals(0.002), 4);
        assert_eq!(tick_decimals(500.0), 0);
    }

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
