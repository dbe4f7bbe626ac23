//! Renders a [`CapacityReport`] as a terminal table, Markdown, JSON or a standalone HTML page
//! with inline SVG bar charts (no script). The report is first laid out as a format-free
//! document ([`doc`]: headings, paragraphs, tables, bar charts), which each text format
//! then prints; the same sections therefore appear in every format, in the same order.
//! Output is deterministic: same report, same bytes.

mod doc;
mod html;
mod text;

use std::str::FromStr;

use thiserror::Error;

use super::CapacityReport;

pub use doc::{Bar, Block, Chart, Table, document};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Markdown,
    Json,
    Html,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown report format {0:?}: use table, md, json or html")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "md" | "markdown" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

/// The report as text in `format`.
pub fn render(report: &CapacityReport, format: Format) -> String {
    match format {
        Format::Json => {
            // The report holds only strings, integers and finite floats: serialising cannot
            // fail, and `null` would be the honest output if it ever did.
            serde_json::to_string_pretty(report).unwrap_or_else(|_| "null".to_string()) + "\n"
        }
        Format::Table => text::plain(&document(report)),
        Format::Markdown => text::markdown(&document(report)),
        Format::Html => html::page(report, &document(report)),
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// `12.5` cores from millicores.
pub(crate) fn cores(milli: i64) -> String {
    trim(milli as f64 / 1000.0)
}

/// `123.4` GiB from bytes.
pub(crate) fn gib(bytes: i64) -> String {
    trim(bytes as f64 / GIB)
}

/// One decimal, without a trailing `.0`; never `-0`.
pub(crate) fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    let s = s.strip_suffix(".0").unwrap_or(&s);
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_format_name_parses_and_others_are_named_in_the_error() {
        for (name, f) in [
            ("table", Format::Table),
            ("md", Format::Markdown),
            ("json", Format::Json),
            ("html", Format::Html),
        ] {
            assert_eq!(name.parse::<Format>(), Ok(f));
        }
        let err = "pdf".parse::<Format>().unwrap_err().to_string();
        assert!(err.contains("\"pdf\""), "{err}");
    }

    #[test]
    fn numbers_are_printed_with_one_decimal_at_most() {
        assert_eq!(cores(12_500), "12.5");
        assert_eq!(cores(3_000), "3");
        assert_eq!(gib(1 << 30), "1");
        assert_eq!(trim(-0.04), "0");
    }
}
