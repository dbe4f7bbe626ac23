//! Every format carries every section of the report, in a shape its readers can parse:
//! JSON reads back to the same report, Markdown tables have as many cells as headers, HTML
//! tags balance and draws its charts as SVG without script, and output is deterministic.

use std::collections::BTreeSet;

use scheduler::generate::{GenerateParams, generate};
use scheduler::input::kube_objects::parse_node_list;
use scheduler::input::{parse_policy, parse_stream_jobs};
use scheduler::model::{JobDemand, SiteSnapshot};
use scheduler::report::render::{Block, document};
use scheduler::report::{
    CapacityReport, DEFAULT_TOP_JOBS, Format, ReportInputs, RightsizingInput, build_report, render,
};
use scheduler::rightsize::{
    JobMetrics, ProcessMetrics, ProcessSpec, RightsizeConfig, Series, recommend,
};

const SECTIONS: [&str; 5] = [
    "Capacity per site and pool",
    "Tenants",
    "Co-location (offline pools)",
    "Failover survivability",
    "Right-sizing",
];

/// A generated two-site cluster, with every job's metrics missing (so that right-sizing
/// lists them all as insufficient data).
fn report() -> CapacityReport {
    let generated = generate(&GenerateParams {
        sites: 2,
        nodes_per_site: 30,
        jobs: 40,
        seed: 11,
    })
    .unwrap();
    let sites: Vec<SiteSnapshot> = generated
        .nodes_json
        .iter()
        .map(|(site, json)| SiteSnapshot {
            id: site.clone(),
            nodes: parse_node_list("nodes.json", json).unwrap(),
            running_pods: Vec::new(),
        })
        .collect();
    let stream_jobs = parse_stream_jobs("jobs.yaml", &generated.jobs_yaml).unwrap();
    let jobs: Vec<JobDemand> = stream_jobs.iter().map(|j| j.demand().unwrap()).collect();
    let policy = parse_policy("policy.yaml", &generated.policy_yaml)
        .unwrap()
        .placement_policy();
    let process = || ProcessMetrics {
        heap_used_bytes: Series::empty_gauge(),
        heap_max_bytes: None,
        cpu_load: None,
        spec: ProcessSpec {
            memory_bytes: 1 << 31,
            cpu_milli: 1000,
            max_memory_bytes: None,
            max_cpu_milli: None,
        },
    };
    let recs: Vec<_> = jobs
        .iter()
        .map(|j| {
            let m = JobMetrics {
                job: j.id.clone(),
                observed_until_ms: 1_700_000_000_000,
                configured_parallelism: 1,
                slots_per_task_manager: 1,
                plan_slot_need: None,
                vertices: Vec::new(),
                task_manager: process(),
                job_manager: process(),
            };
            recommend(&m, &RightsizeConfig::default()).unwrap()
        })
        .collect();
    build_report(&ReportInputs {
        sites: &sites,
        jobs: &jobs,
        policy: &policy,
        running: &[],
        no_failover: &BTreeSet::new(),
        at: chrono::DateTime::parse_from_rfc3339("2026-11-18T20:00:00Z")
            .unwrap()
            .to_utc(),
        rightsizing: Some(RightsizingInput {
            source: "metrics.jsonl",
            lookback_ms: 7 * 24 * 3_600_000,
            recommendations: &recs,
            failures: &[],
        }),
        top_jobs: DEFAULT_TOP_JOBS,
    })
}

#[test]
fn json_reads_back_to_the_same_report() {
    let r = report();
    let back: CapacityReport = serde_json::from_str(&render(&r, Format::Json)).unwrap();
    assert_eq!(back, r);
}

#[test]
fn the_same_report_renders_to_the_same_bytes_in_every_format() {
    let (a, b) = (report(), report());
    for f in [Format::Table, Format::Markdown, Format::Json, Format::Html] {
        assert_eq!(render(&a, f), render(&b, f), "{f:?}");
    }
}

#[test]
fn every_text_format_has_every_section_site_and_tenant() {
    let r = report();
    let tenants: BTreeSet<&str> = r
        .sites
        .iter()
        .flat_map(|s| s.tenants.iter().map(|t| t.tenant.0.as_str()))
        .collect();
    assert!(tenants.len() >= 5, "{tenants:?}");
    for f in [Format::Table, Format::Markdown, Format::Html] {
        let out = render(&r, f);
        for section in SECTIONS {
            let expected = if f == Format::Table {
                section.to_uppercase()
            } else {
                section.to_string()
            };
            let expected = if f == Format::Html {
                expected.replace('&', "&amp;")
            } else {
                expected
            };
            assert!(out.contains(&expected), "{f:?} lacks {section}");
        }
        for site in ["dc-a", "dc-b"] {
            assert!(
                out.contains(&format!("If {site} is lost, ")),
                "{f:?}: no survivability sentence for {site}"
            );
        }
        for t in &tenants {
            assert!(out.contains(t), "{f:?} lacks tenant {t}");
        }
        // Every job lacked metrics: each is counted, none is given a number.
        assert!(out.contains("with insufficient data"), "{f:?}");
        assert!(out.contains("parallelism: "), "{f:?}");
    }
}

#[test]
fn markdown_tables_have_as_many_cells_in_each_row_as_in_the_header() {
    let out = render(&report(), Format::Markdown);
    let mut tables = 0;
    let mut header_cells: Option<usize> = None;
    for line in out.lines() {
        if !line.starts_with('|') {
            header_cells = None;
            continue;
        }
        // Escaped pipes are cell content, not separators.
        let cells = line.replace("\\|", "").matches('|').count() - 1;
        match header_cells {
            None => {
                header_cells = Some(cells);
                tables += 1;
            }
            Some(n) => assert_eq!(cells, n, "row {line:?}"),
        }
    }
    let doc_tables = document(&report())
        .iter()
        .filter(|b| matches!(b, Block::Table(_)))
        .count();
    assert_eq!(tables, doc_tables);
}

#[test]
fn html_balances_its_tags_and_draws_charts_as_svg_without_script() {
    let r = report();
    let out = render(&r, Format::Html);
    assert!(out.starts_with("<!DOCTYPE html>"));
    assert!(!out.to_lowercase().contains("<script"));
    for tag in [
        "html", "body", "table", "thead", "tbody", "tr", "svg", "title", "p",
    ] {
        let open =
            out.matches(&format!("<{tag}>")).count() + out.matches(&format!("<{tag} ")).count();
        let close = out.matches(&format!("</{tag}>")).count();
        assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
    }
    // One capacity chart per dimension, one survivability chart per site, one right-sizing.
    let charts = out.matches("<svg ").count();
    assert_eq!(charts, 2 + r.failover.len() + 1, "charts");
    for lost in &r.failover {
        assert!(out.contains(&format!("If {} is lost: jobs hosted per tier", lost.lost)));
    }
}

#[test]
fn the_table_format_aligns_columns_under_their_headers() {
    let out = render(&report(), Format::Table);
    let header = out
        .lines()
        .find(|l| l.starts_with("SITE") && l.contains("POOL"))
        .unwrap();
    let col = header.find("NODES").unwrap() + "NODES".len();
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| l.starts_with("dc-") || l.starts_with(' '))
        .collect();
    assert!(!rows.is_empty());
    for row in rows {
        // The node count is right-aligned: it ends where the header's NODES ends.
        let before: String = row.chars().take(col).collect();
        assert!(
            before.ends_with(|c: char| c.is_ascii_digit()),
            "{row:?} vs {header:?}"
        );
    }
}
