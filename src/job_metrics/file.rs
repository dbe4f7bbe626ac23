//! Metrics from a file: JSON lines, one series per line, each line shaped like an element of
//! a Prometheus `query_range` answer (`data.result[]`):
//!
//! ```json
//! {"metric":{"__name__":"flink_taskmanager_job_task_busyTimeMsPerSecond","namespace":"trade","twinsite_io_job":"orders","task_id":"cbc3…","task_name":"Source: orders","subtask_index":"0"},"values":[[1700000000,"412.5"],[1700000060,"NaN"]]}
//! ```
//!
//! - `metric`: labels, `__name__` being the metric name; `namespace` and `twinsite_io_job`
//!   say which StreamJob the series belongs to (lines without them are skipped, counted and
//!   logged);
//! - `values`: `[unix seconds, "value"]` pairs; values are strings as Prometheus writes
//!   them, so `NaN`, `+Inf` and `-Inf` survive (the right-sizer drops and reports them).
//!
//! Why this shape rather than OpenMetrics text or one line per sample: it is what Prometheus
//! itself answers, so one decoder serves both sources and real history exports with
//! `curl …/api/v1/query_range | jq -c '.data.result[]'`; one line per series keeps a week of
//! 1000 jobs to a few hundred MB with labels written once per series, not once per sample.
//! Lines may come in any order: the file is indexed by job once (byte offsets only), and a
//! job's lines are read when that job is assessed, so memory holds one job at a time.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use scheduler::report::assemble::{JOB_LABEL, NAMESPACE_LABEL, RawSeries};
use scheduler::rightsize::Window;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{JobKey, MatrixEntry, MetricsError, MetricsSource, decode_matrix_entry};

/// Where one line is: byte offset, length, 1-based line number (for errors).
#[derive(Debug, Clone, Copy)]
struct LineRef {
    offset: u64,
    len: usize,
    line: usize,
}

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    index: HashMap<JobKey, Vec<LineRef>>,
    /// Lines whose labels name no job.
    pub unattributed_lines: usize,
}

/// Only the labels of a line, for the index: the values are skipped, not stored.
#[derive(Deserialize)]
struct LabelsOnly {
    metric: HashMap<String, String>,
    #[serde(default, rename = "values")]
    _values: IgnoredAny,
}

impl FileSource {
    /// Reads the whole file once to index it by job. Every malformed line is an error that
    /// names the file and the line.
    pub fn open(path: &Path) -> Result<FileSource, MetricsError> {
        let io = |source| MetricsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut index: HashMap<JobKey, Vec<LineRef>> = HashMap::new();
        let mut unattributed_lines = 0;
        let mut buf = Vec::new();
        let mut offset = 0u64;
        let mut line = 0usize;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            line += 1;
            let here = LineRef {
                offset,
                len: n,
                line,
            };
            offset += n as u64;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let labels: LabelsOnly =
                serde_json::from_slice(&buf).map_err(|e| MetricsError::Parse {
                    path: path.to_path_buf(),
                    line,
                    problem: format!(
                        "expected {{\"metric\": {{labels}}, \"values\": [[seconds, \"value\"], …]}}: {e}"
                    ),
                })?;
            match (
                labels.metric.get(NAMESPACE_LABEL),
                labels.metric.get(JOB_LABEL),
            ) {
                (Some(namespace), Some(name)) => index
                    .entry(JobKey {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })
                    .or_default()
                    .push(here),
                _ => unattributed_lines += 1,
            }
        }
        if unattributed_lines > 0 {
            tracing::warn!(
                file = %path.display(),
                lines = unattributed_lines,
                "series without `{NAMESPACE_LABEL}` and `{JOB_LABEL}` labels name no job; skipped"
            );
        }
        Ok(FileSource {
            path: path.to_path_buf(),
            index,
            unattributed_lines,
        })
    }

    fn read_job(&self, job: &JobKey, range: Window) -> Result<Vec<RawSeries>, MetricsError> {
        let Some(lines) = self.index.get(job) else {
            return Ok(Vec::new());
        };
        let io = |source| MetricsError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io)?;
        let mut out = Vec::with_capacity(lines.len());
        let mut buf = Vec::new();
        for l in lines {
            file.seek(SeekFrom::Start(l.offset)).map_err(io)?;
            buf.resize(l.len, 0);
            file.read_exact(&mut buf).map_err(io)?;
            let parse = |problem: String| MetricsError::Parse {
                path: self.path.clone(),
                line: l.line,
                problem,
            };
            let entry: MatrixEntry =
                serde_json::from_slice(&buf).map_err(|e| parse(e.to_string()))?;
            let mut series = decode_matrix_entry(entry, &parse)?;
            series.samples.retain(|s| range.contains(s.at_ms));
            out.push(series);
        }
        Ok(out)
    }
}

#[async_trait]
impl MetricsSource for FileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn jobs_with_metrics(&self, _range: Window) -> Result<BTreeSet<JobKey>, MetricsError> {
        Ok(self.index.keys().cloned().collect())
    }

    /// Samples are returned as written (no resampling); aggregation buckets them by step.
    async fn job_series(
        &self,
        job: &JobKey,
        range: Window,
        _step_ms: i64,
    ) -> Result<Vec<RawSeries>, MetricsError> {
        self.read_job(job, range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const RANGE: Window = Window {
        start_ms: 0,
        end_ms: 10_000_000_000_000,
    };

    #[tokio::test]
    async fn lines_of_a_job_are_found_wherever_they_are_in_the_file() {
        let f = file(concat!(
            r#"{"metric":{"__name__":"m","namespace":"a","twinsite_io_job":"x"},"values":[[1,"1"]]}"#,
            "\n",
            r#"{"metric":{"__name__":"m","namespace":"b","twinsite_io_job":"y"},"values":[[1,"2"]]}"#,
            "\n\n",
            r#"{"metric":{"__name__":"n","namespace":"a","twinsite_io_job":"x"},"values":[[2,"NaN"]]}"#,
            "\n",
            r#"{"metric":{"__name__":"up"},"values":[[2,"1"]]}"#,
        ));
        let src = FileSource::open(f.path()).unwrap();
        assert_eq!(src.unattributed_lines, 1);
        let x = JobKey::of(&scheduler::model::JobId("a/x".into()));
        let series = src.job_series(&x, RANGE, 1000).await.unwrap();
        let names: Vec<&str> = series.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(names, vec!["m", "n"]);
        assert_eq!(series[0].samples[0].at_ms, 1000);
        assert!(series[1].samples[0].value.is_nan());
        assert!(!series[0].labels.contains_key("__name__"));
    }

    #[test]
    fn a_malformed_line_is_named_by_file_and_number() {
        let f = file("{\"metric\":{}}\n{not json\n");
        let err = FileSource::open(f.path()).unwrap_err().to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[tokio::test]
    async fn a_value_that_is_not_a_number_is_named_with_its_metric_and_line() {
        let f = file(
            r#"{"metric":{"__name__":"m","namespace":"a","twinsite_io_job":"x"},"values":[[1,"lots"]]}"#,
        );
        let src = FileSource::open(f.path()).unwrap();
        let x = JobKey::of(&scheduler::model::JobId("a/x".into()));
        let err = src
            .job_series(&x, RANGE, 1000)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("\"lots\""), "{err}");
    }
}
