//! `bus bench --plot FILE.svg`: latency percentiles per transport as a
//! hand-written SVG line chart (log-scale latency over p50, p90, p99,
//! p99.9 and max). No plotting dependency: it is a few dozen elements.

use std::fmt::Write as _;

use crate::bench::BenchResult;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// One colour per series, cycling.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

fn points(r: &BenchResult) -> [u64; 5] {
    let l = &r.latency_us;
    [l.p50, l.p90, l.p99, l.p999, l.max].map(|v| v.max(1))
}

/// Renders the chart.
#[allow(clippy::cast_precision_loss, reason = "pixel coordinates")]
pub fn latency_svg(results: &[BenchResult]) -> String {
    let max = results.iter().flat_map(points).max().unwrap_or(1).max(10);
    // Decades from 1 µs up to the first power of ten above the maximum.
    let decade_count = max.ilog10() + 1;
    let decades = f64::from(decade_count);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| LEFT + plot_w * i as f64 / (PERCENTILES.len() - 1) as f64;
    let y = |v: u64| TOP + plot_h * (1.0 - (v as f64).log10() / decades);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">bus bench: round-trip latency (µs, log scale)</text>"#,
        LEFT + plot_w / 2.0
    );
    // Horizontal grid, one line per decade.
    let mut decade = 1u64;
    for d in 0..=decade_count {
        let gy = TOP + plot_h * (1.0 - f64::from(d) / decades);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 8.0,
            gy + 4.0,
            human(decade)
        );
        decade = decade.saturating_mul(10);
    }
    for (i, name) in PERCENTILES.iter().enumerate() {
        let gx = x(i);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#eee"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{name}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 20.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    for (n, r) in results.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let coords: Vec<String> = points(r)
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            coords.join(" ")
        );
        for (i, v) in points(r).iter().enumerate() {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{} {}: {} µs</title></circle>"#,
                x(i),
                y(*v),
                escape(&r.transport),
                PERCENTILES[i],
                v
            );
        }
        let ly = TOP + 10.0 + 18.0 * n as f64;
        let lx = LEFT + plot_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{} {:.0}/s</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&r.transport),
            r.frames_per_sec
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn human(micros: u64) -> String {
    match micros {
        m if m >= 1_000_000 => format!("{} s", m / 1_000_000),
        m if m >= 1_000 => format!("{} ms", m / 1_000),
        m => format!("{m} µs"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
