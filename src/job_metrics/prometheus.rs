//! Metrics from Prometheus' HTTP API (`/api/v1/query` and `/api/v1/query_range`).
//!
//! One instant query lists the jobs that have Flink series in the lookback; then one range
//! query per job fetches all of its raw series (every subtask and pod) at the report's step,
//! aggregated afterwards by `scheduler::report::assemble` exactly as file samples are.
//!
//! Prometheus fills each step with the latest sample up to its lookback delta (5 minutes by
//! default) before the step: a scrape gap shorter than that is bridged by Prometheus itself,
//! and only longer gaps reach the right-sizer's gap check.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use scheduler::report::assemble::{JOB_LABEL, METRICS, NAMESPACE_LABEL, RawSeries};
use scheduler::rightsize::Window;
use serde::Deserialize;

use super::{JobKey, MatrixEntry, MetricsError, MetricsSource, decode_matrix_entry};

/// Long enough for a week of one big job's series on a busy server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PrometheusSource {
    base: String,
    client: reqwest::Client,
}

/// One entry of an instant vector: labels and `[time, "value"]`.
#[derive(Debug, Deserialize)]
pub struct VectorEntry {
    pub metric: std::collections::BTreeMap<String, String>,
    pub value: (f64, String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer<T> {
    status: String,
    data: Option<Data<T>>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data<T> {
    result_type: String,
    result: Vec<T>,
}

/// Seconds since the epoch, as Prometheus takes times.
fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// A PromQL string literal.
pub(crate) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn metric_regex() -> String {
    METRICS.join("|")
}

impl PrometheusSource {
    /// `url` is the server's base, e.g. `http://prometheus:9090` (a path prefix is kept).
    pub fn new(url: &str) -> Result<PrometheusSource, MetricsError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| MetricsError::BadUrl {
            url: url.to_string(),
            problem: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MetricsError::BadUrl {
                url: url.to_string(),
                problem: format!("scheme {:?} is not http or https", parsed.scheme()),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| MetricsError::Http {
                url: url.to_string(),
                problem: e.to_string(),
            })?;
        Ok(PrometheusSource {
            base: url.trim_end_matches('/').to_string(),
            client,
        })
    }

    async fn get_body(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), MetricsError> {
        let url = format!("{}{path}", self.base);
        let http = |problem: String| MetricsError::Http {
            url: url.clone(),
            problem,
        };
        let response = self
            .client
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| http(format!("request failed: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| http(format!("reading the answer: {e}")))?;
        Ok((status, body))
    }

    /// The `data.result` of an API answer of `result_type`, borrowing from `body`.
    fn result<'b, T: Deserialize<'b>>(
        url: &str,
        (status, body): &'b (reqwest::StatusCode, bytes::Bytes),
        result_type: &str,
    ) -> Result<Vec<T>, MetricsError> {
        let http = |problem: String| MetricsError::Http {
            url: url.to_string(),
            problem,
        };
        // Prometheus answers errors (bad query, timeout) with a JSON body too; read it first.
        let answer: Answer<T> = serde_json::from_slice(body).map_err(|e| {
            http(format!(
                "HTTP {status}: not a Prometheus API answer ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        if answer.status != "success" {
            return Err(MetricsError::Prometheus {
                url: url.to_string(),
                error_type: answer.error_type.unwrap_or_else(|| status.to_string()),
                error: answer.error.unwrap_or_default(),
            });
        }
        let data = answer
            .data
            .ok_or_else(|| http("answer has no data".to_string()))?;
        if data.result_type != result_type {
            return Err(http(format!(
                "expected a {result_type}, got a {}",
                data.result_type
            )));
        }
        Ok(data.result)
    }

    /// `GET /api/v1/query`: an instant vector at `at_ms`.
    pub async fn instant(&self, query: &str, at_ms: i64) -> Result<Vec<VectorEntry>, MetricsError> {
        let url = format!("{}/api/v1/query", self.base);
        let body = self
            .get_body(
                "/api/v1/query",
                &[("query", query.to_string()), ("time", seconds(at_ms))],
            )
            .await?;
        Self::result(&url, &body, "vector")
    }

    /// `GET /api/v1/query_range`: a matrix over `range` at `step_ms`.
    pub async fn range(
        &self,
        query: &str,
        range: Window,
        step_ms: i64,
    ) -> Result<Vec<RawSeries>, MetricsError> {
        let url = format!("{}/api/v1/query_range", self.base);
        let body = self
            .get_body(
                "/api/v1/query_range",
                &[
                    ("query", query.to_string()),
                    ("start", seconds(range.start_ms)),
                    ("end", seconds(range.end_ms)),
                    ("step", seconds(step_ms)),
                ],
            )
            .await?;
        let entries: Vec<MatrixEntry<'_>> = Self::result(&url, &body, "matrix")?;
        let at = |problem: String| MetricsError::Http {
            url: url.clone(),
            problem,
        };
        entries
            .into_iter()
            .map(|e| decode_matrix_entry(e, &at))
            .collect()
    }
}

#[async_trait]
impl MetricsSource for PrometheusSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    async fn jobs_with_metrics(&self, range: Window) -> Result<BTreeSet<JobKey>, MetricsError> {
        let seconds = (range.len_ms() / 1000).max(1);
        // One term per metric: `*_over_time` drops the metric name, so over several metrics
        // at once two series differing only by name would collide (Prometheus refuses that).
        let query = METRICS
            .iter()
            .map(|m| {
                format!(
                    "group by ({NAMESPACE_LABEL}, {JOB_LABEL}) (present_over_time({m}{{{JOB_LABEL}!=\"\"}}[{seconds}s]))"
                )
            })
            .collect::<Vec<_>>()
            .join(" or ");
        let entries = self.instant(&query, range.end_ms).await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                Some(JobKey {
                    namespace: e.metric.get(NAMESPACE_LABEL)?.clone(),
                    name: e.metric.get(JOB_LABEL)?.clone(),
                })
            })
            .collect())
    }

    async fn job_series(
        &self,
        job: &JobKey,
        range: Window,
        step_ms: i64,
    ) -> Result<Vec<RawSeries>, MetricsError> {
        let query = format!(
            "{{__name__=~{}, {NAMESPACE_LABEL}={}, {JOB_LABEL}={}}}",
            quote(&metric_regex()),
            quote(&job.namespace),
            quote(&job.name)
        );
        // Steps on multiples of the step, so that every job's buckets line up.
        let aligned = Window {
            start_ms: range.start_ms.div_euclid(step_ms) * step_ms,
            end_ms: range.end_ms,
        };
        self.range(&query, aligned, step_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_quoted_as_promql_strings() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_with_the_value() {
        let err = PrometheusSource::new("file:///tmp/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("file:///tmp/x") && err.contains("not http"),
            "{err}"
        );
        assert!(PrometheusSource::new("not a url").is_err());
    }
}
