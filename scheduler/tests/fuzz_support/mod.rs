//! Byte-level fuzzing on a stable toolchain: proptest picks a seed input (a real file, or a
//! case from `fuzz-corpus/`) and a list of mutations (bit flips, inserted and deleted bytes,
//! spliced chunks, and tokens that have broken parsers before: huge numbers, `..`, YAML
//! anchors and aliases, deep brackets, control characters), and hands the result to a
//! target that must answer, Ok or Err, without panicking, hanging or allocating without
//! bound. Shared by `scheduler/tests/fuzz_inputs.rs` and `failover/tests/fuzz_scenario.rs`.
//!
//! `TWINSITE_FUZZ_CASES` sets the cases per target (the default keeps each target well under
//! 20 s in a debug build). Allocation is bounded by the test binary's global allocator
//! ([`cap::Cap`]): past [`ALLOCATION_LIMIT`] an allocation fails and the binary aborts with
//! "memory allocation of N bytes failed", the symptom of issue #13.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Live bytes the whole fuzz binary may hold at once. Inputs are kilobytes; every target's
/// working set is a few megabytes, so this only trips on an allocation sized by a number in
/// the input (the finding: 32 GiB for `parallelism: 4294967295`, 408 MB for 50 000 000).
pub const ALLOCATION_LIMIT: usize = 128 << 20;

/// A case taking longer than this is a hang (cases take milliseconds).
pub const CASE_DEADLINE: Duration = Duration::from_secs(10);

/// Seeds slower than this are run once but not mutated.
pub const SLOW_SEED: Duration = Duration::from_millis(100);

/// Cases per target: `TWINSITE_FUZZ_CASES`, or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("TWINSITE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Tokens that broke or nearly broke parsers: bounds, overflow, path escapes, YAML
/// structure, aliases, odd characters.
const TOKENS: &[&str] = &[
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "32768",
    "32769",
    "50000000",
    "-1",
    "0",
    "1e308",
    "1e-400",
    "99999999999999999999Ei",
    "8Ei",
    "0.000000000000000000000000000001m",
    "1ns",
    "0s",
    "99999999h",
    "..",
    "/../",
    "./",
    "\\",
    "kube-system",
    "\"",
    "'",
    "{",
    "}",
    "[",
    "]",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "{a: {a: {a: {a: {a: {a: {a: {a: ",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "#",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!str ",
    "~",
    "null",
    "true",
    "\u{0}",
    "\u{1b}",
    "\u{feff}",
    "\u{202e}",
    "é",
    ",",
    "%",
    "0x10",
    ".inf",
    ".nan",
];

#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: u32,
        bit: u8,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    Delete {
        at: u32,
        len: u16,
    },
    /// Copies `len` bytes from `from` to `to` (repeats structure).
    Splice {
        from: u32,
        len: u16,
        to: u32,
    },
    Token {
        at: u32,
        token: usize,
    },
    /// Replaces the number or word at `at` with a token.
    ReplaceWord {
        at: u32,
        token: usize,
    },
    /// Replaces the `nth` run of digits (counted modulo how many there are) with a number
    /// token: bounds are reached far more often than by landing on a digit at random.
    ReplaceNumber {
        nth: u32,
        token: usize,
    },
}

/// Numbers around every bound and integer width the inputs meet (a bound, one past it, the
/// widths of u32/i32/i64): what `ReplaceNumber` writes over a number of the input.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "101",
    "1025",
    "4096",
    "4097",
    "32768",
    "32769",
    "65536",
    "1000000",
    "50000000",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "99999999999999999999",
    "1e308",
    "0.5",
];

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u32>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<u32>(), 1u16..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<u32>(), 1u16..256, any::<u32>()).prop_map(|(from, len, to)| Mutation::Splice {
            from,
            len,
            to
        }),
        (any::<u32>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Token { at, token }),
        (any::<u32>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::ReplaceWord { at, token }),
        (any::<u32>(), any::<usize>())
            .prop_map(|(nth, token)| Mutation::ReplaceNumber { nth, token }),
    ]
}

fn position(at: u32, len: usize) -> usize {
    if len == 0 { 0 } else { at as usize % (len + 1) }
}

/// Applies `mutations` in order to a copy of `seed`.
pub fn mutate(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for m in mutations {
        match m {
            Mutation::FlipBit { at, bit } => {
                if !bytes.is_empty() {
                    let i = *at as usize % bytes.len();
                    bytes[i] ^= 1 << bit;
                }
            }
            Mutation::Insert { at, bytes: new } => {
                let i = position(*at, bytes.len());
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::Delete { at, len } => {
                let i = position(*at, bytes.len());
                let end = (i + *len as usize).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Splice { from, len, to } => {
                let i = position(*from, bytes.len());
                let end = (i + *len as usize).min(bytes.len());
                let chunk = bytes[i..end].to_vec();
                let j = position(*to, bytes.len());
                bytes.splice(j..j, chunk);
            }
            Mutation::Token { at, token } => {
                let i = position(*at, bytes.len());
                bytes.splice(i..i, TOKENS[*token].bytes());
            }
            Mutation::ReplaceWord { at, token } => {
                let i = position(*at, bytes.len());
                let word = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
                let mut start = i.min(bytes.len());
                while start > 0 && word(&bytes[start - 1]) {
                    start -= 1;
                }
                let mut end = start;
                while end < bytes.len() && word(&bytes[end]) {
                    end += 1;
                }
                bytes.splice(start..end, TOKENS[*token].bytes());
            }
            Mutation::ReplaceNumber { nth, token } => {
                let mut runs = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i].is_ascii_digit() {
                        let start = i;
                        while i < bytes.len() && bytes[i].is_ascii_digit() {
                            i += 1;
                        }
                        runs.push((start, i));
                    } else {
                        i += 1;
                    }
                }
                if !runs.is_empty() {
                    let (start, end) = runs[*nth as usize % runs.len()];
                    bytes.splice(start..end, NUMBERS[token % NUMBERS.len()].bytes());
                }
            }
        }
    }
    bytes
}

/// One seed: where it came from (for messages) and its bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every file of `dir` (sorted), and the `extra` files.
pub fn seeds(dir: &Path, extra: &[PathBuf]) -> Vec<Seed> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.extend(extra.iter().cloned());
    paths
        .into_iter()
        .map(|p| Seed {
            name: p.display().to_string(),
            bytes: std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        })
        .collect()
}

/// Runs `target` on every seed unmutated, then on `cases` mutated inputs; fails on a panic
/// (proptest shrinks it to a small input) or a case slower than [`CASE_DEADLINE`]. Returns
/// how many cases ran and the slowest one's time, for the caller to print.
pub fn fuzz(name: &str, seeds: &[Seed], cases: u32, target: impl Fn(&str)) -> (u32, Duration) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut slowest = Duration::ZERO;
    let mut quick = Vec::new();
    for seed in seeds {
        let text = String::from_utf8_lossy(&seed.bytes);
        let started = Instant::now();
        target(&text);
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < CASE_DEADLINE,
            "{name}: seed {} took {took:?}",
            seed.name
        );
        // A seed that is slow to refuse (an alias bomb stopped by the YAML budget) stays
        // slow under mutation and teaches nothing new: it is checked above, not mutated.
        if took < SLOW_SEED {
            quick.push(seed.clone());
        }
    }
    let seeds = &quick[..];
    assert!(!seeds.is_empty(), "{name}: every seed is slow");
    // A failure prints the shrunk input; it goes into the corpus by hand, where it stays
    // meaningful however the seeds change (a persisted RNG seed would not).
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let slowest_mutated = std::cell::Cell::new(Duration::ZERO);
    // Few mutations keep many inputs parseable, so the stages after parsing see them too.
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(), 0..5));
    let result = runner.run(&strategy, |(seed, mutations)| {
        let bytes = mutate(&seeds[seed].bytes, &mutations);
        let text = String::from_utf8_lossy(&bytes);
        let started = Instant::now();
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&text)));
        let took = started.elapsed();
        slowest_mutated.set(slowest_mutated.get().max(took));
        prop_assert!(
            answered.is_ok(),
            "{name}: panicked on this mutation of {}:\n{text}",
            seeds[seed].name
        );
        prop_assert!(
            took < CASE_DEADLINE,
            "{name}: took {took:?} on this mutation of {}:\n{text}",
            seeds[seed].name
        );
        Ok(())
    });
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
    (cases, slowest.max(slowest_mutated.get()))
}
