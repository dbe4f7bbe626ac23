//! What parsing a `_metadata` costs, for a real one and for the worst a hostile one can do
//! within `MAX_METADATA_BYTES`: the densest possible packing of file handles (13 bytes each:
//! an empty local name and a file handle with an empty path), whose parsed form is the most
//! memory per input byte. Prints parse time and the process's peak resident memory.
//!
//! `cargo run --release -p twinsite-hdfs-sync --bin metadata-bench`

use std::time::Instant;

use hdfs_sync::CheckpointMetadata;
use hdfs_sync::metadata::{HEADER_MAGIC, MAX_METADATA_BYTES};

/// Peak resident set size (`VmHWM`) in MiB, Linux only.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Resets the peak to the current resident size (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// One V6 operator, one subtask, one incremental RocksDB handle listing as many shared files
/// as fit in `size` bytes, each with an empty local name and an empty path.
fn densest(size: usize) -> Vec<u8> {
    let mut w: Vec<u8> = Vec::with_capacity(size);
    let i32 = |w: &mut Vec<u8>, v: i32| w.extend_from_slice(&v.to_be_bytes());
    i32(&mut w, HEADER_MAGIC as i32);
    i32(&mut w, 6);
    w.extend_from_slice(&1i64.to_be_bytes());
    i32(&mut w, 0); // master states
    i32(&mut w, 1); // operators
    w.extend_from_slice(&[0, 2, b'o', b'p', 0, 0]); // name, uid
    w.extend_from_slice(&[0; 16]); // operator id
    i32(&mut w, 1);
    i32(&mut w, 1);
    w.push(0); // no coordinator state
    i32(&mut w, 1); // one subtask
    i32(&mut w, 0); // index 0
    i32(&mut w, 0); // no managed operator state
    i32(&mut w, 0); // no raw operator state
    w.push(11); // incremental keyed handle V2
    w.extend_from_slice(&[0; 8]);
    w.extend_from_slice(&[0, 0]);
    i32(&mut w, 0);
    i32(&mut w, 1);
    w.extend_from_slice(&[0; 8]);
    w.push(0); // no meta data handle
    let tail = 4 + 2 + 1 + 4 + 4 + 4;
    let n = (size - w.len() - 4 - tail) / 13;
    i32(&mut w, n as i32);
    for _ in 0..n {
        w.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
    i32(&mut w, 0); // no private files
    w.extend_from_slice(&[0, 0]); // handle id
    w.push(0); // no raw keyed state
    i32(&mut w, 0);
    i32(&mut w, 0);
    w.extend_from_slice(&[0xac, 0xed, 0, 5]);
    w
}

fn measure(what: &str, bytes: &[u8]) {
    reset_peak();
    let before = peak_rss_mib();
    let started = Instant::now();
    let parsed = CheckpointMetadata::parse(bytes, what);
    let took = started.elapsed();
    let after = peak_rss_mib();
    let handles = parsed.as_ref().map(|m| m.handles.len()).unwrap_or(0);
    let growth = match (before, after) {
        (Some(b), Some(a)) => format!("{} MiB", a.saturating_sub(b)),
        _ => "unknown".to_string(),
    };
    println!(
        "{what}: {} bytes, {handles} handles, parsed in {:.1} ms, peak memory grew by {growth}{}",
        bytes.len(),
        took.as_secs_f64() * 1000.0,
        if parsed.is_ok() { "" } else { " (refused)" }
    );
    drop(parsed);
}

fn main() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/flink-2.3-incremental/ckpt/39d63276fa4f046a731a44ba7f26dcb8/chk-26/_metadata",
    );
    if let Ok(real) = std::fs::read(&fixture) {
        measure("real Flink 2.3 _metadata", &real);
    }
    let limit = MAX_METADATA_BYTES as usize;
    let hostile = densest(limit);
    println!(
        "input held in memory: {} MiB (not counted below)",
        hostile.len() >> 20
    );
    measure("densest hostile _metadata at the 64 MiB bound", &hostile);
    let over = densest(limit + 13);
    measure("the same, 13 bytes over the bound", &over);
}
