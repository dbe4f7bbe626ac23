//! A token bucket shared by every job, granted fairly: each job queues at most one request
//! at a time on the shared bucket, and the bucket serves requests first come first served,
//! so busy jobs take turns chunk by chunk instead of one job's many files crowding out others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

/// Bytes per second shared by all jobs; `None` means unlimited.
pub struct BandwidthLimiter {
    rate: Option<u64>,
    bucket: Mutex<Bucket>,
    per_job: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

struct Bucket {
    /// May go negative: a large grant is paid for by waiting before the next one.
    tokens: f64,
    last: Instant,
}

impl BandwidthLimiter {
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        Self {
            rate: bytes_per_second.filter(|r| *r > 0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
            per_job: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Waits until `job` may send `bytes`.
    pub async fn acquire(&self, job: &str, bytes: u64) {
        let Some(rate) = self.rate else { return };
        let job_turn = {
            let mut map = self.per_job.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(job.to_string()).or_default().clone()
        };
        // One outstanding request per job on the shared queue: round-robin between jobs.
        let _job_guard = job_turn.lock().await;
        // tokio's Mutex is FIFO-fair, so waiting jobs are served in arrival order.
        let mut bucket = self.bucket.lock().await;
        let rate_f = rate as f64;
        // Burst: a tenth of a second of traffic, so an idle limiter does not release a flood.
        let burst = (rate_f / 10.0).max(1.0);
        let now = Instant::now();
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate_f).min(burst);
        bucket.last = now;
        bucket.tokens -= bytes as f64;
        if bucket.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-bucket.tokens / rate_f);
            tokio::time::sleep(wait).await;
            let now = Instant::now();
            bucket.tokens += now.duration_since(bucket.last).as_secs_f64() * rate_f;
            bucket.last = now;
        }
    }
}

/// Parses `200MiB`, `1.5GB`, `800k`, `1000` (bytes per second).
pub fn parse_bandwidth(text: &str) -> Result<u64, crate::error::SyncError> {
    let bad = |reason: &str| crate::error::SyncError::InvalidOption {
        field: "bandwidth",
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim().trim_end_matches("/s");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| bad("expected a number followed by a unit such as MiB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad("unknown unit (use B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    let bytes = value * factor;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(bad("must be at least 1 byte per second"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_units_parse_binary_and_decimal() {
        assert_eq!(parse_bandwidth("200MiB").unwrap(), 200 * 1024 * 1024);
        assert_eq!(parse_bandwidth("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bandwidth("800k").unwrap(), 800_000);
        assert_eq!(parse_bandwidth("1000").unwrap(), 1000);
        let err = parse_bandwidth("fast").unwrap_err().to_string();
        assert!(err.contains("bandwidth") && err.contains("fast"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_holds_and_two_jobs_share_it_evenly() {
        let limiter = Arc::new(BandwidthLimiter::new(Some(1_000_000)));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for job in ["a", "b"] {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut done_at = Vec::new();
                for _ in 0..10 {
                    limiter.acquire(job, 100_000).await;
                    done_at.push(tokio::time::Instant::now());
                }
                done_at
            }));
        }
        let a = tasks.remove(0).await.unwrap();
        let b = tasks.remove(0).await.unwrap();
        // 2 MB at 1 MB/s: about two seconds (less the initial burst).
        let total = a
            .last()
            .unwrap()
            .max(b.last().unwrap())
            .duration_since(start);
        assert!(total >= Duration::from_millis(1800), "{total:?}");
        // Fair: neither job finishes its half long before the other.
        let gap = a.last().unwrap().duration_since(start).as_secs_f64()
            - b.last().unwrap().duration_since(start).as_secs_f64();
        assert!(gap.abs() < 0.25, "gap {gap}");
    }
}
