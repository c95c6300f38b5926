//! Drawing: a log-scale spectrum with the null subspace shaded, a layer × module heatmap, and a
//! line chart, as SVG text. Every mark carries a `<title>` so hovering shows its value.

use std::fmt::Write;

/// One line of a spectrum chart.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Values in descending order (plotted relative to the first, on a log scale).
    pub values: &'a [f64],
    /// CSS colour.
    pub color: &'a str,
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;

/// The `<svg>` element, a white background and a centred title.
fn open_svg(title: &str, height: f64, font_size: u32) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height:.0}" width="{W}" height="{height:.0}" font-family="sans-serif" font-size="{font_size}"><rect width="100%" height="100%" fill="white"/><text x="{}" y="20" font-size="13" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(title)
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A log-scale spectrum chart. Each series is divided by its largest value, so activation
/// eigenvalues and weight singular values share the axis; the last `rank` indices of the first
/// series (its null subspace) are shaded.
pub fn spectrum_svg(title: &str, series: &[Series], rank: usize) -> String {
    let n = series.iter().map(|s| s.values.len()).max().unwrap_or(0).max(2);
    let floor = 1e-12;
    let rel = |s: &Series| -> Vec<f64> {
        let top = s.values.first().copied().unwrap_or(1.0).max(floor);
        s.values.iter().map(|v| (v / top).max(floor)).collect()
    };
    let rels: Vec<Vec<f64>> = series.iter().map(rel).collect();
    let min = rels.iter().flatten().copied().fold(1.0, f64::min).max(floor);
    let (lo, hi) = (min.log10().floor(), 0.0);
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1) as f64;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (hi - v.log10()) / (hi - lo).max(1.0);
    let mut svg = open_svg(title, H, 11);
    if let Some(first) = series.first() {
        let len = first.values.len();
        if rank > 0 && rank <= len {
            let x0 = x(len - rank);
            let _ = write!(
                svg,
                r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#f4a261" opacity="0.25"><title>null subspace: the {rank} smallest directions</title></rect><text x="{:.1}" y="{:.1}" fill="#b5651d">null r={rank}</text>"##,
                x(len - 1) - x0 + 1.0,
                H - TOP - BOTTOM,
                x0 + 2.0,
                TOP + 12.0
            );
        }
    }
    for d in (lo as i64)..=0 {
        let yy = y(10f64.powi(d as i32));
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">1e{d}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            yy + 4.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">index (descending)</text><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">value / largest</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 8.0,
        H / 2.0,
        H / 2.0
    );
    for (k, (s, r)) in series.iter().zip(&rels).enumerate() {
        let points: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
            s.color,
            points.join(" "),
            esc(s.label)
        );
        // Hover targets every few points (keeps the SVG small for 1536-long spectra).
        let step = (r.len() / 64).max(1);
        for i in (0..r.len()).step_by(step) {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{}"><title>{} #{}: {:.4e} (relative {:.3e})</title></circle>"#,
                x(i),
                y(r[i]),
                s.color,
                esc(s.label),
                i,
                s.values[i],
                r[i]
            );
        }
        let ly = TOP + 14.0 * k as f64 + 6.0;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            W - RIGHT - 190.0,
            ly,
            s.color,
            W - RIGHT - 174.0,
            ly + 4.0,
            esc(s.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A heatmap: `values[row][col]`, row labels down the side, column labels on top. Colours run
/// from light (low) to dark blue (high) over the data's range.
pub fn heatmap_svg(
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
    unit: &str,
) -> String {
    let (rows, cols) = (row_labels.len(), col_labels.len().max(1));
    let cell_w = ((W - 90.0) / cols as f64).min(80.0);
    let cell_h = (14.0f64).min(600.0 / rows.max(1) as f64).max(8.0);
    let height = 60.0 + cell_h * rows as f64 + 10.0;
    let finite = values.iter().flatten().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut svg = open_svg(title, height, 10);
    for (j, c) in col_labels.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="48" text-anchor="middle">{}</text>"#,
            80.0 + cell_w * (j as f64 + 0.5),
            esc(c)
        );
    }
    for (i, row) in values.iter().enumerate() {
        let yy = 54.0 + cell_h * i as f64;
        let _ = write!(
            svg,
            r#"<text x="74" y="{:.1}" text-anchor="end">{}</text>"#,
            yy + cell_h * 0.8,
            esc(&row_labels[i])
        );
        for (j, v) in row.iter().enumerate() {
            let t = if v.is_finite() { (v - lo) / span } else { 0.0 };
            let (r, g, b) = (
                (240.0 - 200.0 * t) as u8,
                (245.0 - 150.0 * t) as u8,
                (255.0 - 90.0 * t) as u8,
            );
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="rgb({r},{g},{b})" stroke="white"><title>{} {}: {:.4} {}</title></rect>"#,
                80.0 + cell_w * j as f64,
                cell_w,
                cell_h,
                esc(&row_labels[i]),
                esc(col_labels.get(j).map_or("", String::as_str)),
                v,
                esc(unit)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">range {lo:.3} – {hi:.3} {}</text></svg>"#,
        W - 10.0,
        height - 2.0,
        esc(unit)
    );
    svg
}

/// A line chart of `(x, y)` points (e.g. training loss per step), linear axes.
pub fn line_svg(title: &str, points: &[(f64, f64)], y_label: &str) -> String {
    let mut svg = open_svg(title, H, 11);
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if let (Some(first), Some(last)) = (finite.first(), finite.last()) {
        let (x0, x1) = (first.0, last.0.max(first.0 + 1.0));
        let (lo, hi) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
        let x = |v: f64| LEFT + (W - LEFT - RIGHT) * (v - x0) / (x1 - x0);
        let y = |v: f64| TOP + (H - TOP - BOTTOM) * (hi - v) / (hi - lo);
        for k in 0..=4 {
            let v = lo + (hi - lo) * k as f64 / 4.0;
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.3}</text>"##,
                W - RIGHT,
                y(v),
                y(v),
                LEFT - 4.0,
                y(v) + 4.0
            );
        }
        let pts: Vec<String> = finite
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#e63946" stroke-width="1.5" points="{}"/>"##,
            pts.join(" ")
        );
        let step = (finite.len() / 80).max(1);
        for (a, b) in finite.iter().step_by(step).chain(finite.last()) {
            let _ = write!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#e63946"><title>step {a}: {b:.4}</title></circle>"##,
                x(*a),
                y(*b)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 8.0,
            H / 2.0,
            H / 2.0,
            esc(y_label)
        );
    }
    svg.push_str("</svg>");
    svg
}
