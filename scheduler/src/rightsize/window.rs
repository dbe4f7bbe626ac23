//! Turns a raw series into trustworthy samples over a time range, or says why it cannot:
//! non-finite values are dropped, counter resets and gaps refuse the series.

use serde::{Deserialize, Serialize};

use super::input::{Sample, Series, SeriesKind};
use super::recommendation::InsufficientData;

/// A closed time range `[start_ms, end_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    pub fn len_ms(&self) -> i64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    pub fn contains(&self, at_ms: i64) -> bool {
        at_ms >= self.start_ms && at_ms <= self.end_ms
    }

    /// Consecutive windows of `window_ms` ending at `self.end_ms`, oldest first; a
    /// remainder shorter than `window_ms` at the start is left out.
    pub fn split(&self, window_ms: i64) -> Vec<Window> {
        if window_ms <= 0 {
            return vec![*self];
        }
        let count = (self.len_ms() / window_ms).max(1);
        (0..count)
            .rev()
            .map(|i| {
                let end = self.end_ms.saturating_sub(i.saturating_mul(window_ms));
                Window {
                    start_ms: end.saturating_sub(window_ms),
                    end_ms: end,
                }
            })
            .collect()
    }
}

/// How strict the series checks are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoverageRules {
    pub scrape_interval_ms: i64,
    pub min_coverage: f64,
    pub max_gap_intervals: f64,
}

/// Finite samples of one series inside a range, sorted by time, that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanSeries {
    pub kind: SeriesKind,
    /// Finite samples inside the range, sorted by time.
    pub samples: Vec<Sample>,
    /// Non-finite samples that were dropped (reported as evidence).
    pub dropped_non_finite: usize,
}

/// Checks `series` over `range`. `metric` names the series in every reason given back.
pub fn clean(
    metric: &str,
    series: &Series,
    range: Window,
    rules: CoverageRules,
) -> Result<CleanSeries, InsufficientData> {
    if series.samples.is_empty() {
        return Err(InsufficientData::NoSamples {
            metric: metric.to_string(),
        });
    }
    let mut in_range: Vec<Sample> = series
        .samples
        .iter()
        .copied()
        .filter(|s| range.contains(s.at_ms))
        .collect();
    if in_range.is_empty() {
        return Err(InsufficientData::NoSamplesInWindow {
            metric: metric.to_string(),
            window: range,
        });
    }
    in_range.sort_by_key(|s| s.at_ms);
    let total = in_range.len();
    in_range.retain(|s| s.value.is_finite());
    let dropped_non_finite = total - in_range.len();
    if in_range.is_empty() {
        return Err(InsufficientData::AllNonFinite {
            metric: metric.to_string(),
            samples: total,
        });
    }
    if let Some(neg) = in_range.iter().find(|s| s.value < 0.0) {
        return Err(InsufficientData::NegativeValue {
            metric: metric.to_string(),
            at_ms: neg.at_ms,
            value: neg.value,
        });
    }
    if series.kind == SeriesKind::Counter {
        // A counter that goes down was reset: the job restarted inside the range, and rates
        // across a restart mix catch-up with steady state.
        if let Some(pair) = in_range.windows(2).find(|w| w[1].value < w[0].value) {
            return Err(InsufficientData::CounterReset {
                metric: metric.to_string(),
                at_ms: pair[1].at_ms,
                before: pair[0].value,
                after: pair[1].value,
            });
        }
    }
    let max_gap_ms = rules.max_gap_intervals * rules.scrape_interval_ms as f64;
    if let Some(pair) = in_range
        .windows(2)
        .find(|w| (w[1].at_ms.saturating_sub(w[0].at_ms)) as f64 > max_gap_ms)
    {
        return Err(InsufficientData::Gap {
            metric: metric.to_string(),
            from_ms: pair[0].at_ms,
            to_ms: pair[1].at_ms,
            max_gap_ms: max_gap_ms as i64,
            non_finite_dropped: dropped_non_finite,
        });
    }
    let first = in_range.first().map_or(range.start_ms, |s| s.at_ms);
    let last = in_range.last().map_or(range.start_ms, |s| s.at_ms);
    let coverage = if range.len_ms() == 0 {
        1.0
    } else {
        last.saturating_sub(first) as f64 / range.len_ms() as f64
    };
    if coverage < rules.min_coverage {
        return Err(InsufficientData::LowCoverage {
            metric: metric.to_string(),
            window: range,
            covered_fraction: coverage,
            required_fraction: rules.min_coverage,
        });
    }
    Ok(CleanSeries {
        kind: series.kind,
        samples: in_range,
        dropped_non_finite,
    })
}

impl CleanSeries {
    /// The samples in `window`, found by binary search: `clean` sorts them by time, and a
    /// day at 15 s split into 96 windows would otherwise scan every sample per window.
    fn within(&self, window: Window) -> impl Iterator<Item = &Sample> {
        let from = self.samples.partition_point(|s| s.at_ms < window.start_ms);
        let to = self
            .samples
            .partition_point(|s| s.at_ms <= window.end_ms)
            .max(from);
        self.samples[from..to].iter()
    }

    /// Mean of the samples in `window`; `None` without samples there.
    pub fn mean(&self, window: Window) -> Option<f64> {
        let (sum, n) = self
            .within(window)
            .fold((0.0, 0usize), |(sum, n), s| (sum + s.value, n + 1));
        (n > 0).then(|| sum / n as f64)
    }

    pub fn max(&self, window: Window) -> Option<f64> {
        self.within(window).map(|s| s.value).reduce(f64::max)
    }

    pub fn last(&self, window: Window) -> Option<f64> {
        self.within(window).last().map(|s| s.value)
    }

    /// Change per second between the first and last samples in `window` (Flink's `getRate`);
    /// `None` with fewer than two samples or no time between them.
    pub fn rate_per_second(&self, window: Window) -> Option<f64> {
        let mut it = self.within(window);
        let first = it.next()?;
        let last = it.last()?;
        let dt_ms = last.at_ms.saturating_sub(first.at_ms);
        (dt_ms > 0).then(|| 1000.0 * (last.value - first.value) / dt_ms as f64)
    }

    /// Per-second value over `window`: the mean of a per-second gauge, or a counter's rate.
    pub fn per_second(&self, window: Window) -> Option<f64> {
        match self.kind {
            SeriesKind::Gauge => self.mean(window),
            SeriesKind::Counter => self.rate_per_second(window),
        }
    }
}
