//! A standalone HTML page: inline CSS, tables, and horizontal stacked bar charts drawn as
//! inline SVG, so it opens anywhere (mail, wiki attachment) with no script and no network.

use std::fmt::Write as _;

use super::doc::{Block, Chart};
use super::trim;
use crate::report::CapacityReport;

/// Segment colours in series order (colour-blind safe, Okabe–Ito).
const COLOURS: [&str; 4] = ["#0072B2", "#E69F00", "#C8E6C9", "#D55E00"];

const CHART_WIDTH: f64 = 720.0;
const LABEL_WIDTH: f64 = 220.0;
const BAR_HEIGHT: f64 = 18.0;
const BAR_GAP: f64 = 8.0;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A chart as one `<svg>`: a legend row, then one bar per row, value printed at its end.
pub fn svg(chart: &Chart) -> String {
    let total = |b: &super::doc::Bar| b.segments.iter().map(|(_, v)| v.max(0.0)).sum::<f64>();
    let scale_max = chart
        .max
        .unwrap_or_else(|| chart.bars.iter().map(total).fold(0.0, f64::max))
        .max(f64::MIN_POSITIVE);
    let plot = CHART_WIDTH - LABEL_WIDTH - 80.0;
    let legend_height = 24.0;
    let height = legend_height + chart.bars.len() as f64 * (BAR_HEIGHT + BAR_GAP) + BAR_GAP;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{CHART_WIDTH}" height="{height}" viewBox="0 0 {CHART_WIDTH} {height}" role="img" aria-label="{}">"#,
        escape(&chart.title)
    );
    let _ = write!(s, "<title>{}</title>", escape(&chart.title));
    let series: Vec<&str> = chart
        .bars
        .first()
        .map(|b| b.segments.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    let mut x = LABEL_WIDTH;
    for (i, name) in series.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect x="{x}" y="4" width="12" height="12" fill="{}"/><text x="{}" y="14" font-size="12">{}</text>"#,
            COLOURS[i % COLOURS.len()],
            x + 16.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
    for (row, bar) in chart.bars.iter().enumerate() {
        let y = legend_height + row as f64 * (BAR_HEIGHT + BAR_GAP);
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
            LABEL_WIDTH - 8.0,
            y + 13.0,
            escape(&bar.label)
        );
        let mut x = LABEL_WIDTH;
        for (i, (name, value)) in bar.segments.iter().enumerate() {
            let w = value.max(0.0) / scale_max * plot;
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{BAR_HEIGHT}" fill="{}"><title>{}: {} {}</title></rect>"#,
                COLOURS[i % COLOURS.len()],
                escape(name),
                trim(*value),
                escape(&chart.unit)
            );
            x += w;
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="12">{} {}</text>"#,
            x + 4.0,
            y + 13.0,
            trim(bar.segments.first().map_or(0.0, |(_, v)| *v)),
            escape(&chart.unit)
        );
    }
    s.push_str("</svg>");
    s
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{padding:3px 10px;border-bottom:1px solid #ddd;font-size:13px}\
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg.chart{display:block;margin:0.5em 0 1.5em}";

pub fn page(report: &CapacityReport, doc: &[Block]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>twinsite capacity report {}</title><style>{STYLE}</style></head><body>\n",
        escape(&report.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    for block in doc {
        match block {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "<h{level}>{}</h{level}>", escape(text));
            }
            Block::Paragraph(text) => {
                let _ = writeln!(out, "<p>{}</p>", escape(text));
            }
            Block::Table(t) => {
                out.push_str("<table><thead><tr>");
                for h in &t.headers {
                    let _ = write!(out, "<th>{}</th>", escape(h));
                }
                out.push_str("</tr></thead><tbody>\n");
                for row in &t.rows {
                    out.push_str("<tr>");
                    for (i, cell) in row.iter().enumerate() {
                        let class = if t.numeric.get(i).copied().unwrap_or(false) {
                            " class=\"n\""
                        } else {
                            ""
                        };
                        let _ = write!(out, "<td{class}>{}</td>", escape(cell));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody></table>\n");
            }
            Block::Chart(chart) if !chart.bars.is_empty() => {
                let _ = writeln!(out, "{}", svg(chart));
            }
            Block::Chart(_) => {}
        }
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::doc::Bar;
    use super::*;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(escape("<a&b>\"'"), "&lt;a&amp;b&gt;&quot;&#39;");
    }

    #[test]
    fn a_bar_at_the_scale_end_fills_the_plot_and_half_of_it_fills_half() {
        let chart = Chart {
            title: "t".into(),
            unit: "%".into(),
            bars: vec![
                Bar {
                    label: "full".into(),
                    segments: vec![("hosted".into(), 100.0)],
                },
                Bar {
                    label: "half".into(),
                    segments: vec![("hosted".into(), 50.0)],
                },
            ],
            max: Some(100.0),
        };
        let s = svg(&chart);
        let plot = CHART_WIDTH - LABEL_WIDTH - 80.0;
        assert!(s.contains(&format!("width=\"{plot:.1}\"")), "{s}");
        assert!(s.contains(&format!("width=\"{:.1}\"", plot / 2.0)), "{s}");
    }
}
