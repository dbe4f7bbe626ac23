//! Prints replication figures: a 1 GiB / 1000-file checkpoint local → local against `cp -r`
//! and `cp -r && sync` of the same tree in the same run (throughput, ratios, CPU seconds),
//! the cost of an incremental checkpoint adding 5 % new files, and discovery over 1000 jobs
//! × 10 retained checkpoints.
//!
//! Run: `cargo run --release -p twinsite-hdfs-sync --bin sync-bench [WORK_DIR]`
//! (WORK_DIR defaults to /tmp/twinsite-sync-bench; it needs about 5 GiB and is deleted at the
//! end). Give a tmpfs such as /dev/shm to compare CPU cost without the disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hdfs_sync::metadata::encode_modified_utf8;
use hdfs_sync::{LocalStorage, MemoryLedger, Replicator, StorageUrl, SyncOptions, VerifyMode};

const FILES: usize = 1000;
const FILE_SIZE: usize = 1 << 20;

fn utf(out: &mut Vec<u8>, s: &str) {
    if let Some(e) = encode_modified_utf8(s) {
        out.extend_from_slice(&e);
    }
}

/// `_metadata` V6 with one incremental RocksDB handle referencing `files` by absolute URI.
fn metadata(checkpoint_id: i64, files: &[(String, u64)]) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(&0x4960672d_i32.to_be_bytes());
    w.extend_from_slice(&6_i32.to_be_bytes());
    w.extend_from_slice(&checkpoint_id.to_be_bytes());
    w.extend_from_slice(&0_i32.to_be_bytes());
    w.extend_from_slice(&1_i32.to_be_bytes());
    utf(&mut w, "bench");
    utf(&mut w, "");
    w.extend_from_slice(&[0; 16]);
    w.extend_from_slice(&1_i32.to_be_bytes());
    w.extend_from_slice(&128_i32.to_be_bytes());
    w.push(0);
    w.extend_from_slice(&1_i32.to_be_bytes());
    w.extend_from_slice(&0_i32.to_be_bytes());
    w.extend_from_slice(&0_i32.to_be_bytes());
    w.extend_from_slice(&0_i32.to_be_bytes());
    w.push(11);
    w.extend_from_slice(&checkpoint_id.to_be_bytes());
    utf(&mut w, "backend");
    w.extend_from_slice(&0_i32.to_be_bytes());
    w.extend_from_slice(&128_i32.to_be_bytes());
    w.extend_from_slice(&0_i64.to_be_bytes());
    w.push(0);
    w.extend_from_slice(&(files.len() as i32).to_be_bytes());
    for (i, (path, size)) in files.iter().enumerate() {
        utf(&mut w, &format!("{i:06}.sst"));
        w.push(2);
        w.extend_from_slice(&(*size as i64).to_be_bytes());
        utf(&mut w, path);
    }
    w.extend_from_slice(&0_i32.to_be_bytes());
    utf(&mut w, "id");
    w.push(0);
    w.extend_from_slice(&0_i32.to_be_bytes());
    w.extend_from_slice(&0_i32.to_be_bytes());
    w.extend_from_slice(&[0xac, 0xed, 0x00, 0x05, 0x70]);
    w
}

fn write_checkpoint(job_dir: &Path, id: u64, names: &[String]) -> std::io::Result<()> {
    let chk = job_dir.join(format!("chk-{id}"));
    std::fs::create_dir_all(&chk)?;
    let files: Vec<(String, u64)> = names
        .iter()
        .map(|n| {
            (
                format!("file:{}/shared/{n}", job_dir.display()),
                FILE_SIZE as u64,
            )
        })
        .collect();
    std::fs::write(chk.join("_metadata"), metadata(id as i64, &files))
}

fn make_files(shared: &Path, prefix: &str, count: usize) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(shared)?;
    let mut names = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ prefix.len() as u64;
    for i in 0..count {
        let name = format!("{prefix}-{i:05}.sst");
        let mut data = vec![0u8; FILE_SIZE];
        for chunk in data.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bytes = seed.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        std::fs::write(shared.join(&name), data)?;
        names.push(name);
    }
    Ok(names)
}

/// CPU seconds (user + system) from /proc (Linux only): unlike wall time, they do not depend
/// on what else the machine is running. `children`: of the waited-for child processes (`cp`)
/// instead of this process.
fn cpu_seconds_of(children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let first = if children { 13 } else { 11 };
    let ticks =
        fields.get(first)?.parse::<f64>().ok()? + fields.get(first + 1)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux platform Rust supports.
    Some(ticks / 100.0)
}

fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of(false)
}

fn sync_dir(path: &Path) {
    let _ = std::process::Command::new("sync")
        .arg("-f")
        .arg(path)
        .status();
}

struct Cp {
    /// Seconds to `cp -r`, and to `cp -r && sync`.
    copied: f64,
    synced: f64,
    /// CPU seconds of the `cp` process.
    cpu: Option<f64>,
}

/// `cp -r src dst`, then `sync`: seconds to the copy, and to the copy made durable.
fn timed_cp(src: &Path, dst: &Path) -> Result<Cp, Box<dyn std::error::Error>> {
    let cpu_start = cpu_seconds_of(true);
    let start = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(src)
        .arg(dst)
        .status()?;
    let copied = start.elapsed().as_secs_f64();
    let cpu = cpu_start.zip(cpu_seconds_of(true)).map(|(a, b)| b - a);
    if !status.success() {
        return Err("cp -r failed".into());
    }
    sync_dir(dst);
    Ok(Cp {
        copied,
        synced: start.elapsed().as_secs_f64(),
        cpu,
    })
}

fn cpu_text(cpu: Option<f64>) -> String {
    cpu.map_or("?".into(), |c| format!("{c:.2}"))
}

struct Replicated {
    secs: f64,
    /// CPU seconds of the whole process during the round.
    cpu: Option<f64>,
    bytes: u64,
}

async fn replicate(
    src: &Path,
    dst: &Path,
    verify: VerifyMode,
) -> Result<Replicated, Box<dyn std::error::Error>> {
    let options = SyncOptions {
        verify,
        file_parallelism: 8,
        ..SyncOptions::default()
    };
    let r = Replicator::new(
        Arc::new(LocalStorage::new(src)),
        StorageUrl::local(src)?,
        Arc::new(LocalStorage::new(dst)),
        StorageUrl::local(dst)?,
        Arc::new(MemoryLedger::default()),
        options,
    );
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let report = r.run_once().await?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_start.zip(cpu_seconds()).map(|(a, b)| b - a);
    if report.failed() > 0 {
        return Err(format!("replication failed: {report:?}").into());
    }
    Ok(Replicated {
        secs,
        cpu,
        bytes: r.metrics().total_bytes_copied(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/twinsite-sync-bench".into()),
    );
    let _ = std::fs::remove_dir_all(&work);
    let src = work.join("src");
    let job = src.join("job");
    println!(
        "setup: {FILES} files x {} MiB under {}",
        FILE_SIZE >> 20,
        src.display()
    );
    let names = make_files(&job.join("shared"), "base", FILES)?;
    write_checkpoint(&job, 1, &names)?;
    sync_dir(&work);
    let gib = (FILES * FILE_SIZE) as f64 / (1u64 << 30) as f64;
    let mib_s = |secs: f64| gib * 1024.0 / secs;

    // Nothing is deleted until every figure is taken: on ext4, creating files soon after
    // deleting many costs each create a scan of recently freed inodes, which would penalise
    // whichever copy runs right after a deletion. cp -r runs before and after the syncs, so a
    // drift in the machine's load or the disk's speed shows instead of favouring one side.
    let before = timed_cp(&src, &work.join("cp-before"))?;
    let mut rows = Vec::new();
    let mut full_secs = 0.0;
    let mut incremental = None;
    for (label, verify, dir) in [
        (
            "sync (verify: read back)",
            VerifyMode::ReadBack,
            "dst-read-back",
        ),
        (
            "sync (verify: length)",
            VerifyMode::LengthOnly,
            "dst-length",
        ),
    ] {
        let dst = work.join(dir);
        let run = replicate(&src, &dst, verify).await?;
        sync_dir(&work);
        if verify == VerifyMode::ReadBack {
            full_secs = run.secs;
            // Incremental: 5 % new files on top of the replicated base.
            let new = make_files(&job.join("shared"), "incr", FILES / 20)?;
            let all: Vec<String> = names.iter().chain(new.iter()).cloned().collect();
            write_checkpoint(&job, 2, &all)?;
            sync_dir(&work);
            incremental = Some(replicate(&src, &dst, verify).await?);
            // The length-only run copies the same 1 GiB checkpoint as the first.
            std::fs::rename(job.join("chk-2"), work.join("chk-2-moved-aside"))?;
            sync_dir(&work);
        }
        rows.push((label, run));
    }
    let after = timed_cp(&src, &work.join("cp-after"))?;
    let cp_secs = (before.copied + after.copied) / 2.0;
    let cp_sync_secs = (before.synced + after.synced) / 2.0;
    println!(
        "cp -r:                      {cp_secs:7.2} s  {:7.1} MiB/s  (page cache, not durable; runs: {:.2} s before, {:.2} s after; {} / {} CPU s)",
        mib_s(cp_secs),
        before.copied,
        after.copied,
        cpu_text(before.cpu),
        cpu_text(after.cpu),
    );
    println!(
        "cp -r && sync:              {cp_sync_secs:7.2} s  {:7.1} MiB/s  (durable; runs: {:.2} s, {:.2} s)",
        mib_s(cp_sync_secs),
        before.synced,
        after.synced,
    );
    let disk_secs = cp_sync_secs - cp_secs;
    println!(
        "  of which sync:            {disk_secs:7.2} s  {:7.1} MiB/s  (the disk taking 1 GiB: no durable copy is faster, so at best {:.2}x cp -r)",
        mib_s(disk_secs),
        cp_secs / disk_secs,
    );
    for (label, run) in rows {
        println!(
            "{label:27} {:7.2} s  {:7.1} MiB/s  = {:.2}x cp -r, {:.2}x cp -r && sync  ({} bytes, {} CPU s)",
            run.secs,
            run.bytes as f64 / run.secs / (1 << 20) as f64,
            cp_secs / run.secs,
            cp_sync_secs / run.secs,
            run.bytes,
            cpu_text(run.cpu),
        );
    }
    if let Some(run) = incremental {
        println!(
            "incremental (+5 % files):   {:7.2} s  {} bytes copied = {:.1} % of the full copy's time ({} CPU s)",
            run.secs,
            run.bytes,
            100.0 * run.secs / full_secs,
            cpu_text(run.cpu),
        );
    }

    // Discovery: 1000 jobs x 10 retained checkpoints.
    let root = work.join("many");
    let tiny = metadata(1, &[]);
    for j in 0..1000 {
        for c in 0..10 {
            let chk = root.join(format!("{j:032x}")).join(format!("chk-{c}"));
            std::fs::create_dir_all(&chk)?;
            std::fs::write(chk.join("_metadata"), &tiny)?;
        }
    }
    let start = Instant::now();
    let found = hdfs_sync::discovery::discover_all(
        &LocalStorage::new(&root),
        &StorageUrl::local(&root)?,
        32,
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    let checkpoints: usize = found.iter().map(|j| j.complete.len()).sum();
    println!(
        "discovery: {} jobs, {checkpoints} complete checkpoints in {:.0} ms",
        found.len(),
        secs * 1000.0
    );
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
