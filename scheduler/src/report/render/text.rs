//! Plain text (kubectl-style aligned columns) and Markdown (GitHub tables).

use std::fmt::Write as _;

use super::doc::{Block, Table};

fn width(s: &str) -> usize {
    s.chars().count()
}

fn plain_table(out: &mut String, t: &Table) {
    let mut widths: Vec<usize> = t.headers.iter().map(|h| width(h)).collect();
    for row in &t.rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    for row in std::iter::once(&t.headers).chain(&t.rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(width(cell));
            if t.numeric.get(i).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("   ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

pub fn plain(doc: &[Block]) -> String {
    let mut out = String::new();
    for block in doc {
        match block {
            Block::Heading(_, text) => {
                if !out.is_empty() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{}", text.to_uppercase());
            }
            Block::Paragraph(text) => {
                let _ = writeln!(out, "{text}");
            }
            Block::Table(t) => plain_table(&mut out, t),
            Block::Chart(_) => {}
        }
    }
    out
}

/// `|` would end a cell early; newlines would end the row.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(doc: &[Block]) -> String {
    let mut out = String::new();
    for block in doc {
        match block {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "{} {text}\n", "#".repeat(usize::from(*level)));
            }
            Block::Paragraph(text) => {
                let _ = writeln!(out, "{text}\n");
            }
            Block::Table(t) => {
                let head: Vec<String> = t.headers.iter().map(|h| md_cell(h)).collect();
                let _ = writeln!(out, "| {} |", head.join(" | "));
                let rule: Vec<&str> = t
                    .numeric
                    .iter()
                    .map(|n| if *n { "---:" } else { "---" })
                    .collect();
                let _ = writeln!(out, "| {} |", rule.join(" | "));
                for row in &t.rows {
                    let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
                    let _ = writeln!(out, "| {} |", cells.join(" | "));
                }
                out.push('\n');
            }
            Block::Chart(_) => {}
        }
    }
    out
}
