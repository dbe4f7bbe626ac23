//! The `_metadata` file the simulated site writes into each checkpoint and savepoint.
//!
//! PLACEHOLDER FORMAT: a small text file, not Flink's binary `_metadata`. It keeps the one
//! property replication and restore depend on: it lists, by absolute URI, every file the
//! checkpoint needs. Writing and reading happen only here, so a real-format writer can
//! replace these two functions without touching the simulator.

use std::path::Path;

/// First line of every placeholder `_metadata` file.
pub const MAGIC: &str = "twinsite-sim-metadata 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMetadata {
    /// Flink job id (32 hex digits) of the job that took the checkpoint.
    pub flink_job_id: String,
    pub checkpoint_id: u64,
    /// Absolute URIs of every state file the checkpoint references.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimMetadataError {
    #[error("{path}: not a twinsite simulated _metadata file (first line is {first_line:?})")]
    NotPlaceholder { path: String, first_line: String },
    #[error("{path}: line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: missing {field}")]
    Missing { path: String, field: &'static str },
}

pub fn render(meta: &SimMetadata) -> String {
    let mut text = String::new();
    text.push_str(MAGIC);
    text.push('\n');
    text.push_str("# PLACEHOLDER written by twinsite's simulated site, not Flink's format\n");
    text.push_str(&format!("job-id {}\n", meta.flink_job_id));
    text.push_str(&format!("checkpoint-id {}\n", meta.checkpoint_id));
    for file in &meta.files {
        text.push_str(&format!("file {file}\n"));
    }
    text
}

/// Parses a placeholder `_metadata`; `path` only names the file in errors.
pub fn parse(path: &str, text: &str) -> Result<SimMetadata, SimMetadataError> {
    let mut lines = text.lines();
    let first_line = lines.next().unwrap_or_default();
    if first_line != MAGIC {
        return Err(SimMetadataError::NotPlaceholder {
            path: path.to_owned(),
            first_line: first_line.chars().take(80).collect(),
        });
    }
    let mut flink_job_id = None;
    let mut checkpoint_id = None;
    let mut files = Vec::new();
    for (index, line) in lines.enumerate() {
        let line_no = index + 2;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| SimMetadataError::Line {
            path: path.to_owned(),
            line: line_no,
            reason,
        };
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("expected `key value`, found {line:?}")))?;
        match key {
            "job-id" => flink_job_id = Some(value.to_owned()),
            "checkpoint-id" => {
                checkpoint_id = Some(
                    value
                        .parse::<u64>()
                        .map_err(|e| bad(format!("checkpoint-id {value:?}: {e}")))?,
                )
            }
            "file" => files.push(value.to_owned()),
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    Ok(SimMetadata {
        flink_job_id: flink_job_id.ok_or_else(|| SimMetadataError::Missing {
            path: path.to_owned(),
            field: "job-id",
        })?,
        checkpoint_id: checkpoint_id.ok_or_else(|| SimMetadataError::Missing {
            path: path.to_owned(),
            field: "checkpoint-id",
        })?,
        files,
    })
}

/// Writes `meta` as `<dir>/_metadata`, last, via a temporary name: a checkpoint is complete
/// exactly when `_metadata` exists, so it must never be seen half-written.
pub fn write(dir: &Path, meta: &SimMetadata) -> std::io::Result<()> {
    let tmp = dir.join("._metadata.inprogress");
    std::fs::write(&tmp, render(meta))?;
    std::fs::rename(&tmp, dir.join("_metadata"))
}
