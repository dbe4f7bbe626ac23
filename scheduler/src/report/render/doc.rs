//! The report laid out as headings, paragraphs, tables and bar charts, before any format.

use std::fmt::Write as _;

use super::{cores, gib, trim};
use crate::report::{CapacityReport, CapacityRow, Measured, Survivability};

/// How many rows long lists (unplaced jobs, refusals, jobs not hosted) show; the rest are
/// counted in a closing line. JSON always carries everything.
pub const LIST_LIMIT: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Per column: numbers, aligned right.
    pub numeric: Vec<bool>,
}

/// One horizontal bar made of stacked segments `(series name, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub segments: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub unit: String,
    pub bars: Vec<Bar>,
    /// Scale end; `None`: the longest bar.
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Level 1 or 2.
    Heading(u8, String),
    Paragraph(String),
    Table(Table),
    /// Drawn in HTML only; the tables next to it carry the same numbers.
    Chart(Chart),
}

fn table(headers: &[&str], numeric_from: usize, rows: Vec<Vec<String>>) -> Block {
    Block::Table(Table {
        headers: headers.iter().map(|h| h.to_string()).collect(),
        numeric: (0..headers.len()).map(|i| i >= numeric_from).collect(),
        rows,
    })
}

/// `12.3`, `≥ 12.3 (40 of 50 pods)`, or `n/a` when no pod had metrics.
fn used(m: &Measured, scale: f64) -> String {
    if m.insufficient() {
        "n/a".to_string()
    } else if m.complete() {
        trim(m.value / scale)
    } else {
        format!(
            "≥ {} ({} of {} pods)",
            trim(m.value / scale),
            m.pods_measured,
            m.pods_measured + m.pods_unmeasured
        )
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn capacity_cells(row: &CapacityRow) -> Vec<String> {
    vec![
        cores(row.allocatable.cpu_milli),
        cores(row.requested.cpu_milli),
        used(&row.used_cpu_milli, 1000.0),
        cores(row.headroom.cpu_milli),
        gib(row.allocatable.memory_bytes),
        gib(row.requested.memory_bytes),
        used(&row.used_memory_bytes, GIB),
        gib(row.headroom.memory_bytes),
    ]
}

fn more(total: usize) -> Option<Block> {
    (total > LIST_LIMIT).then(|| {
        Block::Paragraph(format!(
            "… and {} more (the JSON format lists all).",
            total - LIST_LIMIT
        ))
    })
}

/// "If dc-a is lost, dc-b can host 100 % of critical, 93.2 % of high … jobs; missing …".
pub fn survival_sentence(s: &Survivability) -> String {
    let survivors: Vec<&str> = s.survivors.iter().map(|x| x.0.as_str()).collect();
    let tiers: Vec<String> = s
        .tiers
        .iter()
        .filter_map(|t| {
            t.percent
                .map(|p| format!("{} % of {}", trim(p), t.priority))
        })
        .collect();
    let mut out = format!("If {} is lost, {} can host ", s.lost, survivors.join(" + "));
    if tiers.is_empty() {
        out.push_str("all of its jobs (it runs none that fail over)");
    } else {
        let _ = write!(out, "{} jobs", tiers.join(", "));
    }
    if s.missing.cpu_milli > 0 || s.missing.memory_bytes > 0 {
        let _ = write!(
            out,
            "; missing {} cores / {} GiB",
            cores(s.missing.cpu_milli),
            gib(s.missing.memory_bytes)
        );
    }
    out.push_str(if s.lending_open {
        " (offline lending open at this instant)."
    } else {
        " (offline lending closed at this instant)."
    });
    out
}

pub fn document(r: &CapacityReport) -> Vec<Block> {
    let mut d = vec![
        Block::Heading(1, "Capacity report".to_string()),
        Block::Paragraph(format!(
            "At {}: {} jobs, {} placed, {} unplaced.",
            r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.jobs,
            r.placed,
            r.unplaced.len()
        )),
    ];

    d.push(Block::Heading(2, "Capacity per site and pool".to_string()));
    let mut rows = Vec::new();
    let mut cpu_bars = Vec::new();
    let mut mem_bars = Vec::new();
    for site in &r.sites {
        let mut total = vec![
            site.site.0.clone(),
            "(all)".to_string(),
            site.nodes.to_string(),
        ];
        total.extend(capacity_cells(&site.total));
        rows.push(total);
        for pool in &site.pools {
            let name = if pool.offline {
                format!("{} (offline)", pool.pool)
            } else {
                pool.pool.clone()
            };
            let mut row = vec![String::new(), name.clone(), pool.nodes.to_string()];
            row.extend(capacity_cells(&pool.row));
            rows.push(row);
            let label = format!("{} {}", site.site, name);
            let bar = |jobs: i64, other: i64, room: i64, scale: f64| Bar {
                label: label.clone(),
                segments: vec![
                    ("requested by jobs".to_string(), jobs as f64 / scale),
                    ("requested by other pods".to_string(), other as f64 / scale),
                    ("headroom".to_string(), room.max(0) as f64 / scale),
                ],
            };
            let row = &pool.row;
            cpu_bars.push(bar(
                row.requested_by_jobs.cpu_milli,
                row.requested_by_other_pods.cpu_milli,
                row.headroom.cpu_milli,
                1000.0,
            ));
            mem_bars.push(bar(
                row.requested_by_jobs.memory_bytes,
                row.requested_by_other_pods.memory_bytes,
                row.headroom.memory_bytes,
                GIB,
            ));
        }
    }
    d.push(table(
        &[
            "SITE",
            "POOL",
            "NODES",
            "CPU ALLOC",
            "CPU REQ",
            "CPU USED",
            "CPU HEADROOM",
            "MEM ALLOC GiB",
            "MEM REQ",
            "MEM USED",
            "MEM HEADROOM",
        ],
        2,
        rows,
    ));
    for site in r.sites.iter().filter(|s| s.nodes_not_accepting > 0) {
        d.push(Block::Paragraph(format!(
            "{}: {} node(s) NotReady or cordoned left out ({} cores, {} GiB).",
            site.site,
            site.nodes_not_accepting,
            cores(site.allocatable_not_accepting.cpu_milli),
            gib(site.allocatable_not_accepting.memory_bytes)
        )));
    }
    d.push(Block::Chart(Chart {
        title: "CPU per pool".to_string(),
        unit: "cores".to_string(),
        bars: cpu_bars,
        max: None,
    }));
    d.push(Block::Chart(Chart {
        title: "Memory per pool".to_string(),
        unit: "GiB".to_string(),
        bars: mem_bars,
        max: None,
    }));

    d.push(Block::Heading(2, "Tenants".to_string()));
    let quota = |q: Option<i64>, f: fn(i64) -> String| q.map_or_else(|| "-".to_string(), f);
    let mut rows = Vec::new();
    for site in &r.sites {
        for t in &site.tenants {
            rows.push(vec![
                site.site.0.clone(),
                t.tenant.0.clone(),
                t.jobs.to_string(),
                quota(t.quota.map(|q| q.cpu_milli), cores),
                cores(t.requested.cpu_milli),
                quota(t.quota_headroom.map(|q| q.cpu_milli), cores),
                used(&t.used_cpu_milli, 1000.0),
                quota(t.quota.map(|q| q.memory_bytes), gib),
                gib(t.requested.memory_bytes),
                quota(t.quota_headroom.map(|q| q.memory_bytes), gib),
                used(&t.used_memory_bytes, GIB),
            ]);
        }
    }
    d.push(table(
        &[
            "SITE",
            "TENANT",
            "JOBS",
            "CPU QUOTA",
            "CPU REQ",
            "CPU QUOTA LEFT",
            "CPU USED",
            "MEM QUOTA GiB",
            "MEM REQ",
            "MEM QUOTA LEFT",
            "MEM USED",
        ],
        2,
        rows,
    ));

    d.push(Block::Heading(2, "Co-location (offline pools)".to_string()));
    if r.colocation.is_empty() {
        d.push(Block::Paragraph(
            "The policy has no offline pool with nodes: nothing is borrowed.".to_string(),
        ));
    } else {
        let rows = r
            .colocation
            .iter()
            .map(|c| {
                let windows: Vec<String> = c
                    .windows
                    .iter()
                    .map(|w| format!("{} {}-{} {}", w.days, w.from, w.to, w.timezone))
                    .collect();
                vec![
                    c.site.0.clone(),
                    c.pool.clone(),
                    if windows.is_empty() {
                        "never".to_string()
                    } else {
                        windows.join("; ")
                    },
                    if c.open_at_report_time { "yes" } else { "no" }.to_string(),
                    c.nodes.to_string(),
                    trim(c.open_hours_per_week),
                    cores(c.lendable.cpu_milli),
                    cores(c.borrowed_by_jobs.cpu_milli),
                    gib(c.lendable.memory_bytes),
                    gib(c.borrowed_by_jobs.memory_bytes),
                ]
            })
            .collect();
        d.push(table(
            &[
                "SITE",
                "POOL",
                "WINDOWS",
                "OPEN NOW",
                "NODES",
                "HOURS/WEEK",
                "CPU LENDABLE",
                "CPU BORROWED",
                "MEM LENDABLE GiB",
                "MEM BORROWED",
            ],
            4,
            rows,
        ));
    }

    d.push(Block::Heading(2, "Failover survivability".to_string()));
    if r.failover.is_empty() {
        d.push(Block::Paragraph(
            "One site only: there is no survivor to fail over to.".to_string(),
        ));
    }
    let mut rows = Vec::new();
    for s in &r.failover {
        d.push(Block::Paragraph(survival_sentence(s)));
        for t in &s.tiers {
            rows.push(vec![
                s.lost.0.clone(),
                t.priority.to_string(),
                t.jobs.to_string(),
                t.hosted.to_string(),
                t.percent.map_or_else(|| "-".to_string(), trim),
                cores(t.missing.cpu_milli),
                gib(t.missing.memory_bytes),
            ]);
        }
    }
    if !r.failover.is_empty() {
        d.push(table(
            &[
                "LOST",
                "TIER",
                "JOBS",
                "HOSTED",
                "HOSTED %",
                "MISSING CPU",
                "MISSING MEM GiB",
            ],
            2,
            rows,
        ));
    }
    for s in &r.failover {
        d.push(Block::Chart(Chart {
            title: format!("If {} is lost: jobs hosted per tier", s.lost),
            unit: "%".to_string(),
            bars: s
                .tiers
                .iter()
                .filter_map(|t| {
                    t.percent.map(|p| Bar {
                        label: t.priority.to_string(),
                        segments: vec![
                            ("hosted".to_string(), p),
                            ("not hosted".to_string(), 100.0 - p),
                        ],
                    })
                })
                .collect(),
            max: Some(100.0),
        }));
        if !s.not_hosted.is_empty() {
            let rows = s
                .not_hosted
                .iter()
                .take(LIST_LIMIT)
                .map(|u| vec![u.job.0.clone(), u.reason.clone()])
                .collect();
            d.push(Block::Paragraph(format!(
                "Not hosted if {} is lost ({}):",
                s.lost,
                s.not_hosted.len()
            )));
            d.push(table(&["JOB", "REASON"], 2, rows));
            d.extend(more(s.not_hosted.len()));
        }
        if !s.not_relaunched.is_empty() || !s.displaced.is_empty() {
            d.push(Block::Paragraph(format!(
                "If {} is lost: {} of its job(s) are never relaunched (failover mode none); {} \
                 job(s) of the survivors lose their place to higher tiers.",
                s.lost,
                s.not_relaunched.len(),
                s.displaced.len()
            )));
        }
    }

    if !r.scale_profiles.is_empty() {
        d.push(Block::Heading(2, "Scale profiles (what-if)".to_string()));
        for w in &r.scale_profiles {
            let mut text = format!(
                "{} ({} to {}, parallelism x{}): {} job(s) scaled, adding {} cores / {} GiB; \
                 planned at {} (offline lending {}): {} of {} jobs placed.",
                w.profile,
                w.from.format("%Y-%m-%d %H:%M UTC"),
                w.until.format("%Y-%m-%d %H:%M UTC"),
                trim(w.parallelism_factor),
                w.jobs_scaled,
                cores(w.added.cpu_milli),
                gib(w.added.memory_bytes),
                w.judged_at.format("%Y-%m-%d %H:%M UTC"),
                if w.lending_open { "open" } else { "closed" },
                w.placed,
                w.jobs
            );
            if !w.not_scaled.is_empty() {
                let _ = write!(
                    text,
                    " {} covered job(s) could not be scaled.",
                    w.not_scaled.len()
                );
            }
            d.push(Block::Paragraph(text));
            for s in &w.failover {
                d.push(Block::Paragraph(format!(
                    "During {}: {}",
                    w.profile,
                    survival_sentence(s)
                )));
            }
            if !w.unplaced.is_empty() {
                let rows = w
                    .unplaced
                    .iter()
                    .take(LIST_LIMIT)
                    .map(|u| vec![u.job.0.clone(), u.reason.clone()])
                    .collect();
                d.push(Block::Paragraph(format!(
                    "Not placed during {} ({}):",
                    w.profile,
                    w.unplaced.len()
                )));
                d.push(table(&["JOB", "REASON"], 2, rows));
                d.extend(more(w.unplaced.len()));
            }
        }
    }

    d.push(Block::Heading(2, "Right-sizing".to_string()));
    match &r.rightsizing {
        None => d.push(Block::Paragraph(
            "No metrics were given: nothing to recommend.".to_string(),
        )),
        Some(z) => {
            d.push(Block::Paragraph(format!(
                "From {} over the last {}: {} jobs, {} fully assessed, {} with insufficient \
                 data. Reclaimable: {} cores, {} GiB. Lacking: {} cores, {} GiB in {} \
                 under-provisioned job(s); {} job(s) over-provisioned.",
                z.source,
                duration_text(z.lookback_ms),
                z.jobs,
                z.jobs_fully_assessed,
                z.refused.len(),
                cores(z.reclaimable_cpu_milli),
                gib(z.reclaimable_memory_bytes),
                cores(z.lacking_cpu_milli),
                gib(z.lacking_memory_bytes),
                z.under_provisioned.len(),
                z.over_provisioned
            )));
            d.push(Block::Chart(Chart {
                title: "Right-sizing".to_string(),
                unit: "cores".to_string(),
                bars: vec![
                    Bar {
                        label: "reclaimable".to_string(),
                        segments: vec![(
                            "reclaimable".to_string(),
                            z.reclaimable_cpu_milli as f64 / 1000.0,
                        )],
                    },
                    Bar {
                        label: "lacking".to_string(),
                        segments: vec![(
                            "lacking".to_string(),
                            z.lacking_cpu_milli as f64 / 1000.0,
                        )],
                    },
                ],
                max: None,
            }));
            if !z.top.is_empty() {
                d.push(Block::Paragraph(format!(
                    "Top {} jobs to fix:",
                    z.top.len()
                )));
                let rows = z
                    .top
                    .iter()
                    .map(|c| {
                        vec![
                            c.job.0.clone(),
                            c.tenant.0.clone(),
                            c.priority.to_string(),
                            format!(
                                "{} → {}",
                                cores(c.current.cpu_milli),
                                cores(c.recommended.cpu_milli)
                            ),
                            format!(
                                "{} → {}",
                                gib(c.current.memory_bytes),
                                gib(c.recommended.memory_bytes)
                            ),
                            format!("{} → {}", c.current_parallelism, c.recommended_parallelism),
                            c.findings.join("; "),
                        ]
                    })
                    .collect();
                d.push(table(
                    &[
                        "JOB",
                        "TENANT",
                        "PRIORITY",
                        "CPU",
                        "MEM GiB",
                        "PARALLELISM",
                        "FINDINGS",
                    ],
                    7,
                    rows,
                ));
                // The grain Flink applies: one row per vertex of the jobs above.
                let vertex_rows: Vec<Vec<String>> = z
                    .top
                    .iter()
                    .flat_map(|c| {
                        c.vertices.iter().map(|v| {
                            vec![
                                c.job.0.clone(),
                                v.name.clone(),
                                v.id.clone(),
                                format!(
                                    "{} → {}",
                                    v.current_parallelism, v.recommended_parallelism
                                ),
                                if v.pinned {
                                    format!("{} (pinned in code)", v.needed_parallelism)
                                } else {
                                    v.needed_parallelism.to_string()
                                },
                                v.max_parallelism.to_string(),
                                v.alignment.clone(),
                            ]
                        })
                    })
                    .collect();
                if !vertex_rows.is_empty() {
                    d.push(Block::Paragraph(
                        "Per vertex (applied as pipeline.jobvertex-parallelism-overrides; \
                         keyed vertices snapped to divisors of their key groups):"
                            .to_string(),
                    ));
                    d.push(table(
                        &[
                            "JOB",
                            "VERTEX",
                            "ID",
                            "PARALLELISM",
                            "NEEDS",
                            "MAX",
                            "KEY GROUPS",
                        ],
                        7,
                        vertex_rows,
                    ));
                }
            }
            if !z.refused.is_empty() {
                d.push(Block::Paragraph(format!(
                    "Insufficient data ({} jobs):",
                    z.refused.len()
                )));
                let rows = z
                    .refused
                    .iter()
                    .take(LIST_LIMIT)
                    .map(|f| {
                        let first = f.reasons.first().cloned().unwrap_or_default();
                        let reason = match f.reasons.len() {
                            0 | 1 => first,
                            n => format!("{first} (+{} more)", n - 1),
                        };
                        vec![f.job.0.clone(), reason]
                    })
                    .collect();
                d.push(table(&["JOB", "REASON"], 2, rows));
                d.extend(more(z.refused.len()));
            }
        }
    }

    if !r.unplaced.is_empty() {
        d.push(Block::Heading(
            2,
            format!("Unplaced jobs ({})", r.unplaced.len()),
        ));
        let rows = r
            .unplaced
            .iter()
            .take(LIST_LIMIT)
            .map(|u| vec![u.job.0.clone(), u.reason.clone()])
            .collect();
        d.push(table(&["JOB", "REASON"], 2, rows));
        d.extend(more(r.unplaced.len()));
    }

    d.push(Block::Heading(2, "Notes".to_string()));
    d.extend(r.notes.iter().map(|n| Block::Paragraph(format!("- {n}"))));
    d
}

/// `7d`, `24h`, `90m`: the largest whole unit.
fn duration_text(ms: i64) -> String {
    let minutes = ms / 60_000;
    if minutes > 0 && minutes % (24 * 60) == 0 {
        format!("{}d", minutes / (24 * 60))
    } else if minutes > 0 && minutes % 60 == 0 {
        format!("{}h", minutes / 60)
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{}s", ms / 1000)
    }
}
