//! The report's charts, drawn with plotters' SVG backend into strings that the HTML inlines.
//!
//! plotters is built without its `ttf` feature: text is laid out with its built-in metrics and
//! written as SVG `<text>` (escaped by the backend) for the browser to draw with its own
//! sans-serif font, so nothing is read from the system or embedded. Legends are the HTML's
//! (real text beside the chart, [`super::html`]), not drawn inside the plot.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::coverage::{HostCoverage, MarkKind, Span};

/// Width of every chart, in SVG user units (the HTML scales it to the page).
pub const WIDTH: u32 = 1100;

/// Colours of the top processes (Okabe-Ito and two more, readable for colour-blind readers
/// and distinct in print); "other" is grey.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0xF0, 0xE4, 0x42),
    RGBColor(0x8C, 0x56, 0x4B),
    RGBColor(0x17, 0xBE, 0xCF),
];
pub const OTHER: RGBColor = RGBColor(0xB4, 0xB4, 0xB4);
pub const NXDOMAIN: RGBColor = RGBColor(0xD6, 0x27, 0x28);
pub const UNANSWERED: RGBColor = RGBColor(0x11, 0x11, 0x11);
pub const NO_RECORD: RGBColor = RGBColor(0xF4, 0xC7, 0xC3);
pub const SILENT: RGBColor = RGBColor(0xD9, 0xEA, 0xD3);
pub const TRAFFIC: RGBColor = RGBColor(0x38, 0x76, 0x1D);
pub const LOSS: RGBColor = RGBColor(0xCC, 0x00, 0x00);
pub const RECOVERED: RGBColor = RGBColor(0xE6, 0x91, 0x38);
pub const UNREADABLE: RGBColor = RGBColor(0x67, 0x4E, 0xA7);

/// `#rrggbb` of a colour, for the HTML legends.
pub fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// A chart that could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the {what} chart: {reason}")]
pub struct ChartError {
    what: &'static str,
    reason: String,
}

fn err(what: &'static str) -> impl Fn(String) -> ChartError {
    move |reason| ChartError { what, reason }
}

/// A label as plotters should draw it: control and bidi-override characters replaced (a name
/// from the data must not reorder or hide text around it), at most `max` characters.
pub fn label(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_control()
                || ('\u{202A}'..='\u{202E}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
            {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect();
    if clean.chars().count() <= max {
        return clean;
    }
    let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// How to write a time on an axis: ns since the epoch → text, chosen for the window's length.
pub type TimeFormat = fn(i64) -> String;

/// The time-axis text for a window of `len` ns: times of day within two days, dates beyond.
pub fn time_format(len: i64) -> TimeFormat {
    const DAY: i64 = 86_400_000_000_000;
    if len <= 2 * DAY {
        |ns| {
            let c = dnsledger_schema::partition::Civil::from_ns(ns);
            format!("{:02}-{:02} {:02}:{:02}", c.month, c.day, c.hour, c.minute)
        }
    } else {
        |ns| {
            let c = dnsledger_schema::partition::Civil::from_ns(ns);
            format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
        }
    }
}

const LEFT: u32 = 170;
const TOP: u32 = 8;
const AXIS: u32 = 34;
const ROW: u32 = 26;

/// The coverage strip chart: one row per host across the window. Pale red: no record; pale
/// green: recorded, no DNS; dark green bars: DNS, their height the bin's share of the host's
/// busiest bin (square root, so that a quiet bin still shows); red ticks: losses; orange:
/// crash recoveries; purple: unreadable segments. `traffic[h][b]` is host `h`'s rows in bin `b`
/// of `bin` ns from the window's start.
pub fn coverage_strip(
    hosts: &[HostCoverage],
    traffic: &[Vec<u64>],
    window: Span,
    bin: i64,
) -> Result<String, ChartError> {
    let e = err("coverage");
    let n = hosts.len().max(1);
    let height = TOP + AXIS + ROW * u32::try_from(n).unwrap_or(u32::MAX / ROW / 2);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (names, plot) = root.split_horizontally(LEFT);
        let len = (window.len() as f64 / 1e9).max(1.0);
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(TOP)
            .margin_right(12)
            .x_label_area_size(AXIS)
            .build_cartesian_2d(0f64..len, 0f64..n as f64)
            .map_err(|x| e(x.to_string()))?;
        let fmt = time_format(window.len());
        let start = window.start;
        let x_fmt = move |x: &f64| fmt(start + (*x * 1e9) as i64);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(8)
            .x_label_formatter(&x_fmt)
            .x_label_style(("sans-serif", 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let secs = |ns: i64| ((ns - window.start) as f64 / 1e9).clamp(0.0, len);
        for (i, h) in hosts.iter().enumerate() {
            // Row i from the top.
            let y0 = (n - 1 - i) as f64 + 0.12;
            let y1 = y0 + 0.76;
            let mut rects = vec![Rectangle::new([(0.0, y0), (len, y1)], NO_RECORD.filled())];
            let shown = pixel_spans(&h.recorded, window.len() / i64::from(WIDTH));
            rects.extend(shown.iter().map(|s| {
                Rectangle::new([(secs(s.start), y0), (secs(s.end), y1)], SILENT.filled())
            }));
            if let Some(bins) = traffic.get(i) {
                let max = bins.iter().copied().max().unwrap_or(0).max(1) as f64;
                for (b, &count) in bins.iter().enumerate() {
                    if count == 0 {
                        continue;
                    }
                    let from = window.start.saturating_add(bin.saturating_mul(b as i64));
                    let to = from.saturating_add(bin).min(window.end);
                    let share = ((count as f64) / max).sqrt().max(0.15);
                    rects.push(Rectangle::new(
                        [(secs(from), y0), (secs(to), y0 + 0.76 * share)],
                        TRAFFIC.filled(),
                    ));
                }
            }
            chart.draw_series(rects).map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(h.marks.iter().map(|m| {
                    let colour = match m.kind {
                        MarkKind::Loss => LOSS,
                        MarkKind::Recovered => RECOVERED,
                        MarkKind::Unreadable => UNREADABLE,
                    };
                    let x = secs(m.at);
                    PathElement::new(vec![(x, y0 - 0.1), (x, y1 + 0.1)], colour.stroke_width(3))
                }))
                .map_err(|x| e(x.to_string()))?;
            row_label(&names, &label(&h.host, 22), i, n, height)?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// `spans` (sorted, disjoint) with the gaps narrower than `min_gap` ns closed: what the chart
/// can show at its width (the tables keep every gap).
fn pixel_spans(spans: &[Span], min_gap: i64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start - last.end < min_gap => last.end = last.end.max(s.end),
            _ => out.push(*s),
        }
    }
    out
}

/// A host name at the left of row `i` of `n`.
fn row_label(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    text: &str,
    i: usize,
    n: usize,
    height: u32,
) -> Result<(), ChartError> {
    let plot_h = f64::from(height - TOP - AXIS);
    let y = f64::from(TOP) + plot_h * (i as f64 + 0.5) / n as f64;
    let style =
        ("sans-serif", 15)
            .into_font()
            .color(&BLACK)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Center,
            ));
    area.draw(&Text::new(
        text.to_owned(),
        (LEFT as i32 - 8, y as i32),
        style,
    ))
    .map_err(|x| err("coverage")(x.to_string()))
}

/// One stacked series of the activity chart: its colour and its value per bucket.
pub struct Series {
    pub colour: RGBColor,
    pub values: Vec<u64>,
}

/// Stacked bars per bucket (`stack`, bottom first) with NXDOMAIN and unanswered counts as
/// lines over them. `bin` ns per bucket from `window.start`; `unit` names the bucket on the
/// y axis ("queries per 5 min").
pub fn activity(
    stack: &[Series],
    nxdomain: &[u64],
    unanswered: &[u64],
    window: Span,
    bin: i64,
    unit: &str,
) -> Result<String, ChartError> {
    let e = err("activity");
    let buckets = stack
        .iter()
        .map(|s| s.values.len())
        .chain([nxdomain.len(), unanswered.len()])
        .max()
        .unwrap_or(0)
        .max(1);
    let totals: Vec<u64> = (0..buckets)
        .map(|b| {
            stack
                .iter()
                .map(|s| s.values.get(b).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let top = totals
        .iter()
        .chain(nxdomain)
        .chain(unanswered)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.08;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .margin_right(16)
            .x_label_area_size(AXIS)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..buckets as f64, 0f64..top)
            .map_err(|x| e(x.to_string()))?;
        let fmt = time_format(window.len());
        let start = window.start;
        let x_fmt = move |x: &f64| fmt(start + (*x * bin as f64) as i64);
        let y_fmt = |y: &f64| {
            if *y >= 10_000.0 {
                format!("{:.0}k", y / 1000.0)
            } else {
                format!("{y:.0}")
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_label_style(("sans-serif", 14))
            .y_label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 14))
            .y_desc(unit)
            .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let mut base = vec![0u64; buckets];
        for s in stack {
            let mut rects = Vec::new();
            for (b, &v) in s.values.iter().enumerate() {
                if v == 0 {
                    continue;
                }
                let x0 = b as f64 + 0.06;
                let x1 = b as f64 + 0.94;
                rects.push(Rectangle::new(
                    [(x0, base[b] as f64), (x1, (base[b] + v) as f64)],
                    s.colour.filled(),
                ));
                base[b] += v;
            }
            chart.draw_series(rects).map_err(|x| e(x.to_string()))?;
        }
        for (values, colour) in [(nxdomain, NXDOMAIN), (unanswered, UNANSWERED)] {
            if values.iter().all(|&v| v == 0) {
                continue;
            }
            let points: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(b, &v)| (b as f64 + 0.5, v as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(
                    points
                        .into_iter()
                        .filter(|(_, v)| *v > 0.0)
                        .map(|p| Circle::new(p, 3, colour.filled())),
                )
                .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::coverage::{Mark, MarkKind};

    #[test]
    fn labels_lose_control_and_bidi_characters_and_are_cut() {
        assert_eq!(label("a\u{202E}b\u{7}c", 10), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(label("abcdefgh", 5), "abcd…");
    }

    #[test]
    fn charts_are_svg_with_escaped_text() {
        let window = Span {
            start: 1_714_564_800_000_000_000,
            end: 1_714_568_400_000_000_000,
        };
        let host = HostCoverage {
            host: "<script>alert(1)</script>".into(),
            recorded: vec![Span {
                start: window.start,
                end: window.start + 600_000_000_000,
            }],
            marks: vec![Mark {
                at: window.start + 60_000_000_000,
                kind: MarkKind::Loss,
            }],
            ..HostCoverage::default()
        };
        let svg = coverage_strip(&[host], &[vec![3, 0, 1]], window, 300_000_000_000).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert!(
            svg.contains(&hex(LOSS).to_uppercase()) || svg.contains(&hex(LOSS)),
            "{svg}"
        );
        let svg = activity(
            &[Series {
                colour: PALETTE[0],
                values: vec![5, 0, 7],
            }],
            &[1, 0, 0],
            &[0, 0, 2],
            window,
            300_000_000_000,
            "queries per 5 min",
        )
        .unwrap();
        assert!(svg.contains("queries per 5 min"), "{svg}");
        assert!(svg.matches("<rect").count() >= 3, "{svg}");
    }
}
