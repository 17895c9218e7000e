//! The timeline of a chaos run as a PNG: each operation's latency against
//! the time it was invoked (log scale), coloured by what it was, unknown
//! outcomes marked, and every fault's window shaded and named.

use std::path::Path;

use plotters::prelude::*;

use super::history::{EventType, Function, Op};
use super::run::FaultWindow;

/// Points drawn per function at most (a long run is sampled evenly).
const POINTS_PER_SERIES_MAX: usize = 40_000;

/// Why a plot was not drawn.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(pub String);

/// Registers DejaVu Sans as the plots' "sans-serif" (plotters draws no
/// text without a font); shared with the benchmarks' plots.
pub fn register_font() -> Result<(), PlotError> {
    load_font().map_err(PlotError)
}

fn load_font() -> Result<(), String> {
    let path = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .ok_or("no DejaVuSans.ttf for the plots' text (apt-get install fonts-dejavu-core)")?;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font does not load".to_string())
}

/// Draws the timeline of `ops` with `faults` shaded into `path`.
pub fn timeline(
    ops: &[Op],
    faults: &[FaultWindow],
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    draw_timeline(ops, faults, title, path).map_err(PlotError)
}

fn draw_timeline(
    ops: &[Op],
    faults: &[FaultWindow],
    title: &str,
    path: &Path,
) -> Result<(), String> {
    load_font()?;
    let end_s = ops
        .iter()
        .filter_map(|o| o.complete.as_ref().map(|c| c.0.time))
        .chain(faults.iter().map(|f| f.end_ns))
        .max()
        .unwrap_or(1) as f64
        / 1e9
        * 1.02;
    let point = |o: &Op| {
        let (c, _) = o.complete.as_ref()?;
        let start = o.invoke.0.time;
        let ms = (c.time.saturating_sub(start) as f64 / 1e6).max(0.01);
        Some((start as f64 / 1e9, ms, c.kind))
    };
    let max_ms = ops
        .iter()
        .filter_map(point)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 2.0;
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..end_s, (0.01..max_ms).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("time since the run started (s)")
        .y_desc("operation latency (ms, log)")
        .draw()
        .map_err(|e| e.to_string())?;
    let shade = RGBColor(255, 200, 120).mix(0.35);
    for (i, f) in faults.iter().enumerate() {
        let (a, b) = (f.start_ns as f64 / 1e9, f.end_ns as f64 / 1e9);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, 0.01), (b, max_ms)],
                shade.filled(),
            )))
            .map_err(|e| e.to_string())?;
        // Short names, on three staggered rows at the bottom (where no
        // operation is that fast), so that neighbours do not overlap.
        let label: String = f
            .what
            .split([':', '('])
            .next()
            .unwrap_or(&f.what)
            .trim()
            .chars()
            .take(22)
            .collect();
        let row = [0.045, 0.026, 0.015][i % 3];
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (a, row),
                ("sans-serif", 12).into_font().color(&BLACK),
            )))
            .map_err(|e| e.to_string())?;
    }
    let series = [
        (Function::Create, "create", RGBColor(0, 110, 0)),
        (Function::Drop, "drop", RGBColor(150, 90, 0)),
        (Function::Read, "read (table exists?)", RGBColor(0, 80, 200)),
        (Function::Put, "put", RGBColor(140, 0, 160)),
        (Function::Get, "get", RGBColor(0, 160, 160)),
    ];
    for (f, name, color) in series {
        let points: Vec<(f64, f64)> = ops
            .iter()
            .filter(|o| o.invoke.0.f == f)
            .filter_map(point)
            .filter(|p| p.2 != EventType::Info)
            .map(|p| (p.0, p.1))
            .collect();
        if points.is_empty() {
            continue;
        }
        let step = points.len().div_ceil(POINTS_PER_SERIES_MAX);
        chart
            .draw_series(
                points
                    .iter()
                    .step_by(step)
                    .map(|&p| Circle::new(p, 1, color.mix(0.5).filled())),
            )
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    let unknown: Vec<(f64, f64)> = ops
        .iter()
        .filter_map(point)
        .filter(|p| p.2 == EventType::Info)
        .map(|p| (p.0, p.1))
        .collect();
    chart
        .draw_series(
            unknown
                .iter()
                .map(|&p| Cross::new(p, 5, RED.stroke_width(2))),
        )
        .map_err(|e| e.to_string())?
        .label("unknown outcome (info)")
        .legend(|(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
