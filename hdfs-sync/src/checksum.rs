//! The integrity checksum of replicated files: XXH64 (seed 0), streaming.
//!
//! Replication needs to know that the bytes at the peer are the bytes read at the source
//! (a short write, a flipped bit, a file changed behind our back), not to resist someone
//! forging a collision: the peer is written by us. XXH64 detects such accidents with the
//! odds of a 64-bit checksum and runs at memory speed (~10 GB/s on one core here), where
//! SHA-256 (~1.5 GB/s with SHA-NI) was ~40 % of a replication's CPU. SHA-256 stays where it is
//! an address: content-addressed jars (`jars`).
//!
//! Implemented here (safe Rust, ~80 lines) rather than taken from a crate so that the crate
//! adds no dependency; the test vectors below come from the reference `xxhsum -H1` 0.8.1.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// The name recorded with every checksum (`xxh64:<16 hex digits>`), so manifests written by
/// an older release (bare SHA-256 hex) are told apart from new ones.
pub const ALGORITHM: &str = "xxh64";

#[inline(always)]
fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline(always)]
fn merge(acc: u64, lane: u64) -> u64 {
    (acc ^ round(0, lane)).wrapping_mul(P1).wrapping_add(P4)
}

#[inline(always)]
fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(w)
}

/// Streaming XXH64 with seed 0: `update` with any split of the input gives the same result.
#[derive(Clone)]
pub struct Xxh64 {
    acc: [u64; 4],
    /// Bytes not yet consumed as a whole 32-byte stripe.
    buf: [u8; 32],
    buffered: usize,
    total: u64,
}

impl Default for Xxh64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Xxh64 {
    pub fn new() -> Self {
        Self {
            acc: [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)],
            buf: [0; 32],
            buffered: 0,
            total: 0,
        }
    }

    #[inline(always)]
    fn stripe(acc: &mut [u64; 4], s: &[u8]) {
        acc[0] = round(acc[0], u64_at(s, 0));
        acc[1] = round(acc[1], u64_at(s, 8));
        acc[2] = round(acc[2], u64_at(s, 16));
        acc[3] = round(acc[3], u64_at(s, 24));
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buffered > 0 {
            let take = (32 - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 32 {
                return;
            }
            let buf = self.buf;
            Self::stripe(&mut self.acc, &buf);
            self.buffered = 0;
        }
        let mut stripes = data.chunks_exact(32);
        let mut acc = self.acc;
        for s in &mut stripes {
            Self::stripe(&mut acc, s);
        }
        self.acc = acc;
        let rest = stripes.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    pub fn finish(&self) -> u64 {
        let [v1, v2, v3, v4] = self.acc;
        let mut h = if self.total >= 32 {
            let h = v1
                .rotate_left(1)
                .wrapping_add(v2.rotate_left(7))
                .wrapping_add(v3.rotate_left(12))
                .wrapping_add(v4.rotate_left(18));
            merge(merge(merge(merge(h, v1), v2), v3), v4)
        } else {
            P5
        };
        h = h.wrapping_add(self.total);
        let tail = &self.buf[..self.buffered];
        let mut i = 0;
        while i + 8 <= tail.len() {
            h ^= round(0, u64_at(tail, i));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            i += 8;
        }
        if i + 4 <= tail.len() {
            h ^= u64::from(u32_at(tail, i)).wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            i += 4;
        }
        for &b in &tail[i..] {
            h ^= u64::from(b).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }

    /// `xxh64:<16 hex digits>`, as recorded in manifests and errors.
    pub fn hex(&self) -> String {
        format!("{ALGORITHM}:{:016x}", self.finish())
    }
}

/// The recorded checksum of a whole buffer.
pub fn of(data: &[u8]) -> String {
    let mut h = Xxh64::new();
    h.update(data);
    h.hex()
}

/// Length and recorded checksum of everything `reader` yields, chunk by chunk: how a copy is
/// verified by reading it back (a file may be gigabytes).
pub async fn of_stream(
    reader: &mut dyn crate::storage::ReadStream,
) -> Result<(u64, String), crate::StorageError> {
    let mut h = Xxh64::new();
    let mut len = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        len += chunk.len() as u64;
        h.update(&chunk);
    }
    Ok((len, h.hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_read_back_in_chunks_has_the_length_and_checksum_of_its_bytes() {
        use crate::storage::{LocalStorage, Storage};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0");
        // Three whole chunks and a tail, so the stream really arrives in pieces.
        let data = pattern(3 * crate::storage::CHUNK_SIZE + 5);
        std::fs::write(&path, &data).unwrap();
        let url = crate::StorageUrl::parse(&format!("file://{}", path.display())).unwrap();
        let mut reader = LocalStorage::new(dir.path()).open_read(&url).await.unwrap();
        let (len, sum) = of_stream(&mut *reader).await.unwrap();
        assert_eq!((len, sum), (data.len() as u64, of(&data)));
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect()
    }

    /// `xxhsum -H1` (xxHash 0.8.1) of `pattern(n)`.
    const VECTORS: &[(usize, u64)] = &[
        (0, 0xef46db3751d8e999),
        (1, 0xa96c7f0ce858bbb7),
        (3, 0x56e6957632a487f9),
        (4, 0xc60d15b1e3ff8f04),
        (5, 0x808815858624dd4e),
        (7, 0xafbefc3d6c6f9a8e),
        (8, 0x3da5c7aa269683e0),
        (9, 0x465ec429b13c3892),
        (15, 0xdee89d8a065a6233),
        (16, 0x1330489a77679c80),
        (31, 0x3391303d485e846e),
        (32, 0x40b7aff75d45bbc8),
        (33, 0x4997cae4951c17a5),
        (63, 0x2944b4dafc69b206),
        (64, 0xbb76f6ef19bd5a1b),
        (65, 0x814e0c654a9fd640),
        (100, 0xf0b29a915621716d),
        (1000, 0x9e3300c1cde3c58d),
        (1048581, 0xef54a6a7cc14d566),
    ];

    #[test]
    fn matches_the_reference_implementation() {
        for &(n, want) in VECTORS {
            let mut h = Xxh64::new();
            h.update(&pattern(n));
            assert_eq!(h.finish(), want, "length {n}");
        }
        let mut h = Xxh64::new();
        h.update(b"abc");
        assert_eq!(h.hex(), "xxh64:44bc2cf5ad770999");
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_checksum() {
        let data = pattern(1000);
        let whole = of(&data);
        for split in [1, 7, 31, 32, 33, 64, 100, 999] {
            let mut h = Xxh64::new();
            for piece in data.chunks(split) {
                h.update(piece);
            }
            assert_eq!(h.hex(), whole, "pieces of {split}");
        }
        let mut h = Xxh64::new();
        h.update(&data[..5]);
        h.update(&data[5..40]);
        h.update(&data[40..]);
        assert_eq!(h.hex(), whole);
    }

    #[test]
    fn a_flipped_bit_or_a_missing_byte_changes_it() {
        let data = pattern(4096);
        let base = of(&data);
        let mut flipped = data.clone();
        flipped[2048] ^= 1;
        assert_ne!(of(&flipped), base);
        assert_ne!(of(&data[..4095]), base);
    }
}
