//! Prints replication figures: a 1 GiB / 1000-file checkpoint local → local against `cp -r`
//! of the same tree in the same run, the cost of an incremental checkpoint adding 5 % new
//! files, and discovery over 1000 jobs × 10 retained checkpoints.
//!
//! Run: `cargo run --release -p twinsite-hdfs-sync --bin sync-bench [WORK_DIR]`
//! (WORK_DIR defaults to /tmp/twinsite-sync-bench; it is deleted at the end).

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

fn sync_dir(path: &Path) {
    let _ = std::process::Command::new("sync")
        .arg("-f")
        .arg(path)
        .status();
}

async fn replicate(
    src: &Path,
    dst: &Path,
    verify: VerifyMode,
) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let options = SyncOptions {
        verify,
        file_parallelism: 8,
        ..SyncOptions::default()
    };
    let r = Replicator::new(
        Arc::new(LocalStorage),
        StorageUrl::local(src)?,
        Arc::new(LocalStorage),
        StorageUrl::local(dst)?,
        Arc::new(MemoryLedger::default()),
        options,
    );
    let start = Instant::now();
    let report = r.run_once().await?;
    let secs = start.elapsed().as_secs_f64();
    if report.failed() > 0 {
        return Err(format!("replication failed: {report:?}").into());
    }
    Ok((secs, r.metrics().total_bytes_copied()))
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

    let start = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(work.join("cp-copy"))
        .status()?;
    let cp_secs = start.elapsed().as_secs_f64();
    if !status.success() {
        return Err("cp -r failed".into());
    }
    println!(
        "cp -r:                      {cp_secs:7.2} s  {:7.1} MiB/s (page cache, not durable)",
        gib * 1024.0 / cp_secs
    );
    sync_dir(&work);
    let cp_sync_secs = start.elapsed().as_secs_f64();
    println!(
        "cp -r && sync:              {cp_sync_secs:7.2} s  {:7.1} MiB/s (durable, as sync fsyncs every file)",
        gib * 1024.0 / cp_sync_secs
    );
    std::fs::remove_dir_all(work.join("cp-copy"))?;
    sync_dir(&work);

    for (label, verify) in [
        ("sync (verify: read back)", VerifyMode::ReadBack),
        ("sync (verify: length)", VerifyMode::LengthOnly),
    ] {
        let dst = work.join("dst");
        let (secs, bytes) = replicate(&src, &dst, verify).await?;
        println!(
            "{label:27} {secs:7.2} s  {:7.1} MiB/s  = {:.2}x cp -r, {:.2}x cp -r && sync  ({bytes} bytes)",
            bytes as f64 / secs / (1 << 20) as f64,
            cp_secs / secs,
            cp_sync_secs / secs
        );
        if verify == VerifyMode::ReadBack {
            let full_secs = secs;
            // Incremental: 5 % new files on top of the replicated base.
            let new = make_files(&job.join("shared"), "incr", FILES / 20)?;
            let all: Vec<String> = names.iter().chain(new.iter()).cloned().collect();
            write_checkpoint(&job, 2, &all)?;
            let (isecs, ibytes) = replicate(&src, &dst, verify).await?;
            println!(
                "incremental (+5 % files):   {isecs:7.2} s  {ibytes} bytes copied = {:.1} % of the full copy's time",
                100.0 * isecs / full_secs
            );
            std::fs::remove_dir_all(job.join("chk-2"))?;
            for n in &new {
                std::fs::remove_file(job.join("shared").join(n))?;
            }
        }
        std::fs::remove_dir_all(&dst)?;
        sync_dir(&work);
    }
    std::fs::remove_dir_all(&src)?;

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
    let found =
        hdfs_sync::discovery::discover_all(&LocalStorage, &StorageUrl::local(&root)?, 32).await?;
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
