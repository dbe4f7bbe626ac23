//! The `sites` and `pools` sections: each site's cluster and storage, the node pools, and the
//! offline lending windows a pool opens. Checked field by field; pools resolve to `NodePool`s.

use std::collections::BTreeSet;

use super::STORAGE_SCHEMES;
use super::file::{OfflineSpec, PoolSpec, SiteSpec, WindowSpec};
use crate::input::common::{check_labels, check_name, check_uri, cpu_milli, integer_value};
use crate::input::error::Problems;
use crate::model::{LendingWindow, NodePool, OfflineLending, Resources, SiteId};

/// Checks `sites` and returns their names: the only names any other section may use.
pub(super) fn check_sites<'a>(sites: &'a [SiteSpec], problems: &mut Problems) -> BTreeSet<&'a str> {
    let mut site_names = BTreeSet::new();
    if sites.is_empty() {
        problems.field("sites", "at least one site is required");
    }
    for (i, site) in sites.iter().enumerate() {
        let at = format!("sites[{i}]");
        check_name(problems, &format!("{at}.name"), &site.name);
        if !site_names.insert(site.name.as_str()) {
            problems.field(
                format!("{at}.name"),
                format!("site {:?} is defined twice", site.name),
            );
        }
        if let Some(storage) = &site.storage
            && check_uri(
                problems,
                &format!("{at}.storage"),
                storage,
                &STORAGE_SCHEMES,
                "twinsite reads and replicates jars and checkpoints there",
                false,
            )
            .as_deref()
                == Some("hdfs")
            && storage
                .strip_prefix("hdfs://")
                .is_some_and(|rest| rest.starts_with('/'))
        {
            problems.field(
                format!("{at}.storage"),
                format!("{storage:?} names no NameNode or nameservice (hdfs://<nameservice>/...)"),
            );
        }
        if let Some(kubernetes) = &site.kubernetes {
            if let Some(namespace) = &kubernetes.namespace {
                check_name(problems, &format!("{at}.kubernetes.namespace"), namespace);
            }
            for (field, value) in [
                ("kubeconfig", &kubernetes.kubeconfig),
                ("context", &kubernetes.context),
            ] {
                if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                    problems.field(format!("{at}.kubernetes.{field}"), "must not be empty");
                }
            }
        }
    }
    site_names
}

/// Refuses `name` in `field` unless it is one of the policy's `site_names`.
pub(super) fn check_known_site(
    problems: &mut Problems,
    site_names: &BTreeSet<&str>,
    field: String,
    name: &str,
) {
    if !site_names.contains(name) {
        problems.field(
            field,
            format!(
                "unknown site {name:?}; sites are {}",
                site_names
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

pub(super) fn resolve_pools(
    specs: &[PoolSpec],
    site_names: &BTreeSet<&str>,
    problems: &mut Problems,
) -> Vec<NodePool> {
    let mut pools = Vec::new();
    let mut pool_names = BTreeSet::new();
    for (i, pool) in specs.iter().enumerate() {
        let at = format!("pools[{i}]");
        check_name(problems, &format!("{at}.name"), &pool.name);
        if !pool_names.insert(pool.name.as_str()) {
            problems.field(
                format!("{at}.name"),
                format!("pool {:?} is defined twice", pool.name),
            );
        }
        if let Some(site) = &pool.site {
            check_known_site(problems, site_names, format!("{at}.site"), site);
        }
        check_labels(problems, &format!("{at}.selector"), &pool.selector, true);
        let offline = pool
            .offline
            .as_ref()
            .and_then(|o| resolve_offline(o, &format!("{at}.offline"), problems));
        pools.push(NodePool {
            name: pool.name.clone(),
            site: pool.site.clone().map(SiteId),
            selector: pool.selector.clone(),
            offline,
        });
    }
    pools
}

fn resolve_offline(
    offline: &OfflineSpec,
    at: &str,
    problems: &mut Problems,
) -> Option<OfflineLending> {
    let before = problems.len();
    let fraction = offline.max_borrow_fraction;
    if !(0.0..=1.0).contains(&fraction) {
        problems.field(
            format!("{at}.maxBorrowFraction"),
            format!("must be between 0 and 1, found {fraction}"),
        );
    }
    let mut windows = Vec::new();
    for (i, window) in offline.windows.iter().enumerate() {
        if let Some(w) = resolve_window(window, &format!("{at}.windows[{i}]"), problems) {
            windows.push(w);
        }
    }
    let mut margin = Resources::ZERO;
    if let Some(m) = &offline.safety_margin {
        if let Some(cpu) = &m.cpu {
            margin.cpu_milli =
                cpu_milli(problems, &format!("{at}.safetyMargin.cpu"), cpu, true).unwrap_or(0);
        }
        if let Some(memory) = &m.memory {
            margin.memory_bytes =
                integer_value(problems, &format!("{at}.safetyMargin.memory"), memory, true)
                    .unwrap_or(0);
        }
        margin.pods = m.pods.map_or(0, i64::from);
    }
    if problems.len() > before {
        return None;
    }
    Some(OfflineLending {
        windows,
        max_borrow_fraction: fraction,
        safety_margin: margin,
        lend_by: offline.lend_by.unwrap_or_default(),
    })
}

fn resolve_window(window: &WindowSpec, at: &str, problems: &mut Problems) -> Option<LendingWindow> {
    let before = problems.len();
    let days = match &window.days {
        None => vec![
            chrono::Weekday::Mon,
            chrono::Weekday::Tue,
            chrono::Weekday::Wed,
            chrono::Weekday::Thu,
            chrono::Weekday::Fri,
            chrono::Weekday::Sat,
            chrono::Weekday::Sun,
        ],
        Some(days) if days.is_empty() => {
            problems.field(
                format!("{at}.days"),
                "an empty list opens the window on no day; leave days out for every day",
            );
            Vec::new()
        }
        Some(days) => {
            let mut parsed = Vec::new();
            for (i, day) in days.iter().enumerate() {
                match day.parse::<chrono::Weekday>() {
                    Ok(d) if !parsed.contains(&d) => parsed.push(d),
                    Ok(_) => problems.field(
                        format!("{at}.days[{i}]"),
                        format!("{day:?} is listed twice"),
                    ),
                    Err(_) => problems.field(
                        format!("{at}.days[{i}]"),
                        format!(
                            "unknown day {day:?}; expected Mon, Tue, Wed, Thu, Fri, Sat or Sun"
                        ),
                    ),
                }
            }
            parsed
        }
    };
    let start = clock_minute(&window.start, false);
    let end = clock_minute(&window.end, true);
    if start.is_none() {
        problems.field(
            format!("{at}.start"),
            format!(
                "{:?} is not a time of day HH:MM (00:00 to 23:59)",
                window.start
            ),
        );
    }
    if end.is_none() {
        problems.field(
            format!("{at}.end"),
            format!(
                "{:?} is not a time of day HH:MM (00:00 to 24:00)",
                window.end
            ),
        );
    }
    if let (Some(s), Some(e)) = (start, end)
        && s == e
    {
        problems.field(
            format!("{at}.end"),
            format!(
                "the window {}–{} is empty; for a whole day write 00:00–24:00",
                window.start, window.end
            ),
        );
    }
    let timezone = match window.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            problems.field(
                format!("{at}.timezone"),
                format!(
                    "unknown timezone {:?} (an IANA name such as \"Asia/Shanghai\")",
                    window.timezone
                ),
            );
            None
        }
    };
    if problems.len() > before {
        return None;
    }
    Some(LendingWindow {
        days,
        start_minute: start?,
        end_minute: end?,
        timezone: timezone?,
    })
}

/// Minutes after midnight of `HH:MM`; `24:00` only as an end.
fn clock_minute(text: &str, is_end: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if m >= 60 {
        return None;
    }
    match (h, m) {
        (24, 0) if is_end => Some(1440),
        (h, m) if h < 24 => Some(h * 60 + m),
        _ => None,
    }
}
