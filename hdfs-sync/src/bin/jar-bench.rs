//! Prints jar publication throughput: a 256 MiB jar published local → two site directories
//! (one identifying read, then per site a streamed copy and a read-back hash), against
//! `cp` of the same file to two places followed by `sync`, in the same run.
//!
//! Run: `cargo run --release -p twinsite-hdfs-sync --bin jar-bench [WORK_DIR]`
//! (WORK_DIR defaults to /tmp/twinsite-jar-bench; it needs about 1 GiB and is deleted at the
//! end).

use std::path::PathBuf;
use std::time::Instant;

use hdfs_sync::jars::publish_jar;
use hdfs_sync::{LocalStorage, StorageUrl};

const JAR_BYTES: usize = 256 << 20;

fn mib_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9)
}

fn main() {
    let work = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/twinsite-jar-bench"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("source")).expect("work directory");
    // Not compressible and not all one value: bytes of a simple generator.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..JAR_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let jar_path = work.join("source/job.jar");
    std::fs::write(&jar_path, &bytes).expect("write the jar");
    drop(bytes);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let storage = LocalStorage::new(&work);
    let jar = StorageUrl::local(&jar_path).expect("jar url");
    let roots: Vec<StorageUrl> = ["site-a", "site-b"]
        .iter()
        .map(|s| StorageUrl::local(&work.join(s).join("twinsite/jars")).expect("root"))
        .collect();

    let started = Instant::now();
    let publication = runtime
        .block_on(publish_jar(
            &storage,
            &jar,
            &[(&storage, &roots[0]), (&storage, &roots[1])],
        ))
        .expect("publish");
    let publish_s = started.elapsed().as_secs_f64();
    assert!(publication.sites.iter().all(Result::is_ok));

    let started = Instant::now();
    let again = runtime
        .block_on(publish_jar(
            &storage,
            &jar,
            &[(&storage, &roots[0]), (&storage, &roots[1])],
        ))
        .expect("publish again");
    let verify_s = started.elapsed().as_secs_f64();
    assert!(again.sites.iter().all(Result::is_ok));

    let started = Instant::now();
    for target in ["cp-a.jar", "cp-b.jar"] {
        let status = std::process::Command::new("cp")
            .arg(&jar_path)
            .arg(work.join(target))
            .status()
            .expect("cp");
        assert!(status.success());
    }
    let _ = std::process::Command::new("sync").status();
    let cp_s = started.elapsed().as_secs_f64();

    let copied = 2 * JAR_BYTES;
    println!("jar: {} MiB, published to 2 sites", JAR_BYTES >> 20);
    println!(
        "publish (identify + 2 × copy, fsync, read-back sha256): {publish_s:.2} s = {:.0} MiB/s of jar copied",
        mib_per_s(copied, publish_s)
    );
    println!(
        "publish again (identify + 2 × verify in place, nothing written): {verify_s:.2} s = {:.0} MiB/s of jar checked",
        mib_per_s(copied, verify_s)
    );
    println!(
        "cp to 2 places + sync: {cp_s:.2} s = {:.0} MiB/s; publish takes {:.1}× its time",
        mib_per_s(copied, cp_s),
        publish_s / cp_s.max(1e-9)
    );
    let _ = std::fs::remove_dir_all(&work);
}
