//! The embedded backend: one process, one local directory, one file per key.
//!
//! Every key is a file `data/<key segments>.rec` holding a header line
//! `twinsite-state 1 <mod revision> <sha256 of body>` and the JSON body. A write goes to a
//! temporary file that is fsynced, renamed over the record and followed by an fsync of the
//! directory, so a crash leaves either the old or the new record, never a torn one; the
//! checksum catches later damage. Deleting first persists the revision high-water mark in
//! `REVISION`, so revisions never repeat across restarts. `LOCK` is held with `flock` for the
//! store's lifetime, so a second process (or instance) fails to open the same directory.
//! All records are loaded at open (about a thousand jobs fit easily in memory), and a
//! damaged file fails the open with an error naming it.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::keys::{KeyLayout, validate_segment};
use super::kv::{KvBackend, KvEntry, check_revision, next_revision};
use super::store::KvStateStore;
use super::{Expected, StateError};

const HEADER_MAGIC: &str = "twinsite-state";
const FORMAT_VERSION: &str = "1";
const RECORD_SUFFIX: &str = ".rec";
const TEMP_SUFFIX: &str = ".tmp";

/// The typed state store in a local directory.
pub type EmbeddedStateStore = KvStateStore<EmbeddedKv>;

impl KvStateStore<EmbeddedKv> {
    /// Opens (creating if needed) the store in `dir` with the default key layout.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        Ok(KvStateStore::new(
            EmbeddedKv::open(dir)?,
            KeyLayout::default(),
        ))
    }
}

/// A local directory as a [`KvBackend`]. Its single instance always "leads": writes are never
/// fenced, since the directory lock already excludes a second writer.
pub struct EmbeddedKv {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    root: PathBuf,
    data: PathBuf,
    entries: BTreeMap<String, KvEntry>,
    revision: i64,
    // Held, never read: closing the file releases the flock.
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl EmbeddedKv {
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("LOCK");
        let mut lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    dir: dir.to_path_buf(),
                    lock_file: lock_path,
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(StateError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        // The pid is for the operator who wonders who holds the lock; the flock is the lock.
        lock.set_len(0).map_err(io(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;

        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(io(&data))?;
        let mut entries = BTreeMap::new();
        load_dir(&data, &data, &mut entries)?;
        let high_water = read_high_water(&dir.join("REVISION"))?;
        let revision = entries
            .values()
            .map(|e: &KvEntry| e.mod_revision)
            .fold(high_water, i64::max);
        // A store whose counter cannot grow would fail every write; say so at open.
        check_revision(&dir.display().to_string(), revision, false)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                root: dir.to_path_buf(),
                data,
                entries,
                revision,
                _lock: lock,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Memory changes only after the disk write succeeded, so a panic elsewhere while
        // holding the lock cannot leave memory ahead of disk.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        key: &str,
        work: impl FnOnce(&mut Inner) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut inner)
        })
        .await
        .map_err(|e| StateError::Unavailable {
            operation,
            key: key.to_owned(),
            reason: format!("embedded store worker failed: {e}"),
        })?
    }
}

fn read_high_water(path: &Path) -> Result<i64, StateError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let revision = text.trim().parse().map_err(|_| StateError::Corrupt {
                location: path.display().to_string(),
                reason: format!("revision high-water mark {:?} is not a number", text.trim()),
            })?;
            check_revision(&path.display().to_string(), revision, true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn load_dir(
    data: &Path,
    dir: &Path,
    entries: &mut BTreeMap<String, KvEntry>,
) -> Result<(), StateError> {
    for item in fs::read_dir(dir).map_err(io(dir))? {
        let item = item.map_err(io(dir))?;
        let path = item.path();
        let file_type = item.file_type().map_err(io(&path))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if file_type.is_dir() {
            load_dir(data, &path, entries)?;
        } else if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            // A write that crashed before its rename: the record it meant to replace is intact.
            fs::remove_file(&path).map_err(io(&path))?;
        } else if name.ends_with(RECORD_SUFFIX) {
            let key = key_of_path(data, &path)?;
            let bytes = fs::read(&path).map_err(io(&path))?;
            entries.insert(key, decode_record(&path, &bytes)?);
        } else {
            tracing::warn!(file = %path.display(), "ignoring a file that is not a state record");
        }
    }
    Ok(())
}

fn key_of_path(data: &Path, path: &Path) -> Result<String, StateError> {
    let corrupt = |reason: &str| StateError::Corrupt {
        location: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let relative = path
        .strip_prefix(data)
        .map_err(|_| corrupt("record lies outside the data directory"))?;
    let mut key = String::new();
    for component in relative.components() {
        let segment = component
            .as_os_str()
            .to_str()
            .ok_or_else(|| corrupt("record path is not UTF-8"))?;
        let segment = segment.strip_suffix(RECORD_SUFFIX).unwrap_or(segment);
        validate_segment("key segment", segment).map_err(|e| corrupt(&e.to_string()))?;
        key.push('/');
        key.push_str(segment);
    }
    Ok(key)
}

fn path_of_key(data: &Path, key: &str) -> Result<PathBuf, StateError> {
    let invalid = |reason| StateError::InvalidName {
        what: "key",
        value: key.to_owned(),
        reason,
    };
    let rest = key
        .strip_prefix('/')
        .ok_or(invalid("must start with '/'"))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let mut path = data.to_path_buf();
    for (index, segment) in segments.iter().enumerate() {
        validate_segment("key segment", segment)?;
        if index + 1 == segments.len() {
            path.push(format!("{segment}{RECORD_SUFFIX}"));
        } else {
            path.push(segment);
        }
    }
    Ok(path)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn encode_record(revision: i64, value: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "{HEADER_MAGIC} {FORMAT_VERSION} {revision} {}\n",
        sha256_hex(value)
    )
    .into_bytes();
    bytes.extend_from_slice(value);
    bytes
}

fn decode_record(path: &Path, bytes: &[u8]) -> Result<KvEntry, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        location: path.display().to_string(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt("no header line".to_owned()))?;
    let header = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| corrupt("header is not UTF-8".to_owned()))?;
    let body = &bytes[newline + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, revision, checksum] = fields.as_slice() else {
        return Err(corrupt(format!("malformed header {header:?}")));
    };
    if *magic != HEADER_MAGIC || *version != FORMAT_VERSION {
        return Err(corrupt(format!("unknown header {header:?}")));
    }
    let mod_revision: i64 = revision
        .parse()
        .map_err(|_| corrupt(format!("revision {revision:?} is not a number")))?;
    let mod_revision = check_revision(&path.display().to_string(), mod_revision, true)?;
    let actual = sha256_hex(body);
    if actual != *checksum {
        return Err(corrupt(format!(
            "checksum mismatch: header says {checksum}, body hashes to {actual}"
        )));
    }
    Ok(KvEntry {
        value: body.to_vec(),
        mod_revision,
    })
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
fn write_atomically(stop_at: &Path, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let parent = path.parent().unwrap_or(stop_at);
    if !parent.exists() {
        fs::create_dir_all(parent).map_err(io(parent))?;
        // New directories are durable only once their parents' entries are synced.
        let mut dir = parent;
        while let Some(up) = dir.parent() {
            sync_dir(up)?;
            if up == stop_at || !up.starts_with(stop_at) {
                break;
            }
            dir = up;
        }
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{file_name}{TEMP_SUFFIX}"));
    let mut file = File::create(&temp).map_err(io(&temp))?;
    file.write_all(bytes).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io(path))?;
    sync_dir(parent)
}

fn check_expected(
    key: &str,
    expected: Expected,
    current: Option<&KvEntry>,
) -> Result<(), StateError> {
    let actual = current.map(|e| e.mod_revision);
    let holds = match expected {
        Expected::Any => true,
        Expected::Absent => actual.is_none(),
        Expected::Revision(rev) => actual == Some(rev),
    };
    if holds {
        return Ok(());
    }
    Err(StateError::Conflict {
        key: key.to_owned(),
        expected: match expected {
            Expected::Revision(rev) => Some(rev),
            Expected::Absent | Expected::Any => None,
        },
        actual,
    })
}

impl Inner {
    fn put(&mut self, key: String, value: Vec<u8>, expected: Expected) -> Result<i64, StateError> {
        check_expected(&key, expected, self.entries.get(&key))?;
        let path = path_of_key(&self.data, &key)?;
        let revision = next_revision(&self.root.display().to_string(), self.revision)?;
        write_atomically(&self.data, &path, &encode_record(revision, &value))?;
        self.revision = revision;
        self.entries.insert(
            key,
            KvEntry {
                value,
                mod_revision: revision,
            },
        );
        Ok(revision)
    }

    fn delete(&mut self, key: String, expected: Expected) -> Result<bool, StateError> {
        check_expected(&key, expected, self.entries.get(&key))?;
        if !self.entries.contains_key(&key) {
            return Ok(false);
        }
        let path = path_of_key(&self.data, &key)?;
        let revision = next_revision(&self.root.display().to_string(), self.revision)?;
        // The deleted record may hold the highest revision; remember it before it goes.
        write_atomically(
            &self.root,
            &self.root.join("REVISION"),
            format!("{revision}\n").as_bytes(),
        )?;
        fs::remove_file(&path).map_err(io(&path))?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        self.revision = revision;
        self.entries.remove(&key);
        Ok(true)
    }
}

#[async_trait]
impl KvBackend for EmbeddedKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, StateError> {
        Ok(self.lock().entries.get(key).cloned())
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, KvEntry)>, StateError> {
        let from = start.filter(|s| *s > prefix).unwrap_or(prefix).to_owned();
        let limit = if limit == 0 { usize::MAX } else { limit };
        Ok(self
            .lock()
            .entries
            .range(from..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect())
    }

    async fn last(
        &self,
        prefix: &str,
        below: Option<&str>,
    ) -> Result<Option<(String, KvEntry)>, StateError> {
        if below.is_some_and(|below| below <= prefix) {
            return Ok(None);
        }
        let inner = self.lock();
        let mut range = match below {
            Some(below) => inner.entries.range(prefix.to_owned()..below.to_owned()),
            None => inner.entries.range(prefix.to_owned()..),
        };
        Ok(match below {
            // Every key before `below` and not before `prefix`: the last one is the answer
            // if it starts with `prefix`.
            Some(_) => range.next_back().filter(|(key, _)| key.starts_with(prefix)),
            None => range.take_while(|(key, _)| key.starts_with(prefix)).last(),
        }
        .map(|(key, entry)| (key.clone(), entry.clone())))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<i64, StateError> {
        let owned = key.to_owned();
        self.blocking("put", key, move |inner| inner.put(owned, value, expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Expected) -> Result<bool, StateError> {
        let owned = key.to_owned();
        self.blocking("delete", key, move |inner| inner.delete(owned, expected))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_file_format() {
        let bytes = encode_record(42, br#"{"a":1}"#);
        let entry = decode_record(Path::new("x.rec"), &bytes).unwrap();
        assert_eq!(entry.mod_revision, 42);
        assert_eq!(entry.value, br#"{"a":1}"#.to_vec());
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let mut bytes = encode_record(7, br#"{"a":1}"#);
        let last = bytes.len() - 2;
        bytes[last] = b'2';
        let err = decode_record(Path::new("/s/x.rec"), &bytes).unwrap_err();
        assert!(err.to_string().contains("/s/x.rec"), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn keys_and_paths_map_both_ways() {
        let data = Path::new("/state/data");
        let path = path_of_key(data, "/twinsite/v1/jobs/ns/job-1").unwrap();
        assert_eq!(path, Path::new("/state/data/twinsite/v1/jobs/ns/job-1.rec"));
        assert_eq!(
            key_of_path(data, &path).unwrap(),
            "/twinsite/v1/jobs/ns/job-1"
        );
    }

    #[test]
    fn a_key_with_a_dot_dot_segment_has_no_path() {
        assert!(path_of_key(Path::new("/d"), "/twinsite/../etc").is_err());
    }
}
