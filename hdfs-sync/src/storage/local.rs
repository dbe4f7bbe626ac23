//! The local backend (`file://`): `LocalStorage`, its chunked readers and writers on tokio's
//! blocking pool, and the register of unfinished writes. It must never touch a path but
//! through `walk.rs`, which refuses links below the root.

use super::*;

/// The local filesystem (`file://`), confined to one root directory.
///
/// The root is taken as the operator wrote it: it may be, or pass through, a symbolic link.
/// Below it nothing is followed: every path is opened one component at a time from the
/// root's directory with `O_NOFOLLOW`, so a link anywhere below the root (a `shared/` or job
/// directory, a file) is refused with [`StorageErrorKind::Symlink`] naming it, whether it was
/// there before or swapped in during the call. Paths are normalised [`StorageUrl`]s (no `..`),
/// and a URL outside the root is refused with [`StorageErrorKind::OutsideRoot`]. Hard links
/// are not links to refuse: they are the file itself (and, with the kernel's default
/// `protected_hardlinks`, only its owner can make one).
///
/// File contents move through `std::fs` on tokio's blocking pool, one hop per chunk, straight
/// into and out of the chunk buffers: `tokio::fs::File` would copy every chunk once more
/// through a buffer of its own. Chunk buffers are recycled (see [`ChunkPool`]) because a fresh
/// megabyte costs 256 page faults, each zeroing a page.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    pub(super) root: Arc<Path>,
}

impl LocalStorage {
    /// Local files at and below `root` (an absolute path).
    pub fn new(root: impl AsRef<Path>) -> Self {
        Self {
            root: Arc::from(root.as_ref()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Runs blocking file work off the async workers; a panic there becomes an error of `op`.
pub(super) async fn blocking<T: Send + 'static>(
    op: &'static str,
    url: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::new(op, url, StorageErrorKind::Other, e))
}

/// Chunk buffers handed back by finished readers. A chunk given to a caller shares its
/// reader's buffer; once the caller drops it, `BytesMut::reserve` takes the memory back.
struct ChunkPool;

/// Buffers kept for reuse: one per file in flight with the default parallelism (8 jobs × 4
/// files); beyond that, idle memory would outweigh the page faults saved.
const POOL_LIMIT: usize = 32;

static POOL: std::sync::Mutex<Vec<BytesMut>> = std::sync::Mutex::new(Vec::new());

impl ChunkPool {
    fn take() -> BytesMut {
        let pooled = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pooled.unwrap_or_else(|| BytesMut::with_capacity(CHUNK_SIZE))
    }

    fn give(buf: BytesMut) {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_LIMIT {
            pool.push(buf);
        }
    }
}

/// Reads up to one chunk into `buf`, reusing its memory when the previous chunk was dropped.
fn read_chunk(mut file: &std::fs::File, buf: &mut BytesMut) -> std::io::Result<Option<Bytes>> {
    buf.clear();
    buf.reserve(CHUNK_SIZE);
    // Safe Rust cannot read into uninitialised memory; zeroing a warm buffer is cheap.
    buf.resize(CHUNK_SIZE, 0);
    let mut filled = 0;
    // Fill the whole chunk so callers see few, large chunks.
    while filled < CHUNK_SIZE {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.clear();
                return Err(e);
            }
        }
    }
    buf.truncate(filled);
    Ok((filled > 0).then(|| buf.split().freeze()))
}

/// Where a local reader's file is between chunks.
enum ReaderState {
    Idle(std::fs::File, BytesMut),
    /// Lent to a blocking read whose future was dropped (a timeout): the stream is unusable.
    Interrupted,
    Done,
}

struct LocalReader {
    state: ReaderState,
    url: String,
    permissions: u32,
}

#[async_trait]
impl ReadStream for LocalReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        let (file, mut buf) = match std::mem::replace(&mut self.state, ReaderState::Interrupted) {
            ReaderState::Idle(file, buf) => (file, buf),
            ReaderState::Done => {
                self.state = ReaderState::Done;
                return Ok(None);
            }
            ReaderState::Interrupted => {
                return Err(StorageError::new(
                    "read",
                    &self.url,
                    StorageErrorKind::Other,
                    "an earlier read of this stream was interrupted",
                ));
            }
        };
        let (file, buf, result) = blocking("read", &self.url, move || {
            let result = read_chunk(&file, &mut buf);
            (file, buf, result)
        })
        .await?;
        match result {
            Ok(Some(chunk)) => {
                self.state = ReaderState::Idle(file, buf);
                Ok(Some(chunk))
            }
            Ok(None) => {
                ChunkPool::give(buf);
                self.state = ReaderState::Done;
                Ok(None)
            }
            Err(e) => {
                ChunkPool::give(buf);
                self.state = ReaderState::Done;
                Err(StorageError::from_io("read", &self.url, &e))
            }
        }
    }

    fn permissions(&self) -> Option<u32> {
        Some(self.permissions)
    }
}

impl Drop for LocalReader {
    fn drop(&mut self) {
        if let ReaderState::Idle(_, buf) = std::mem::replace(&mut self.state, ReaderState::Done) {
            ChunkPool::give(buf);
        }
    }
}

pub(super) struct LocalWriter {
    /// `None` while a write is on the blocking pool, and for good once such a write's future
    /// was dropped.
    pub(super) file: Option<std::fs::File>,
    /// The directory the temporary file and its target are in, opened without following links:
    /// the rename and the clean-up act on it, never on a path looked up again.
    pub(super) dir: Arc<OwnedFd>,
    pub(super) temp: OsString,
    pub(super) target: OsString,
    pub(super) url: String,
    /// Set once the temporary file is renamed onto the target.
    pub(super) committed: bool,
}

impl LocalWriter {
    fn take_file(&mut self, op: &'static str) -> Result<std::fs::File, StorageError> {
        self.file.take().ok_or_else(|| {
            StorageError::new(
                op,
                &self.url,
                StorageErrorKind::Other,
                "an earlier write of this stream was interrupted",
            )
        })
    }
}

#[async_trait]
impl WriteStream for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let file = self.take_file("write")?;
        let (file, result) = blocking("write", &self.url, move || {
            let result = (&file).write_all(&chunk);
            (file, result)
        })
        .await?;
        self.file = Some(file);
        result.map_err(|e| StorageError::from_io("write", &self.url, &e))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        let file = self.take_file("commit")?;
        let (dir, temp, target) = (self.dir.clone(), self.temp.clone(), self.target.clone());
        // Synced before the rename, so the target name never shows data still in flight.
        let result = blocking("commit", &self.url, move || {
            file.sync_all()?;
            drop(file);
            rustix::fs::renameat(&*dir, &temp, &*dir, &target).map_err(std::io::Error::from)
        })
        .await?;
        self.committed = result.is_ok();
        // On failure, dropping `self` removes the temporary file.
        result.map_err(|e| StorageError::from_io("commit", &self.url, &e))
    }

    async fn abort(self: Box<Self>) {
        // Dropping `self` removes the temporary file.
    }
}

impl Drop for LocalWriter {
    /// A writer dropped before its commit (an abort, an error, a task cancelled at shutdown)
    /// removes its temporary file, so an interrupted sync leaves no litter behind.
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&*self.dir, &self.temp, AtFlags::empty());
        }
        unfinished().files.remove(&self.temp);
    }
}

/// The temporary files of this process's local writers not yet committed or dropped, by
/// name (unique in the process, see [`temp_name`]), with the directory each is in.
///
/// Why: a dropped writer removes its file, but at exit the writers are dropped by the
/// runtime's worker threads, which the exit waits for only briefly (a call stuck on a hung
/// filesystem must not hold it). A worker the OS does not schedule in time never drops its
/// writer, and the file would stay. [`discard_unfinished_local_writes`] lets the exiting
/// thread remove them itself.
pub(super) struct Unfinished {
    /// Set by the discard: no new temporary file is created after it.
    pub(super) closed: bool,
    /// Creations between their check of `closed` and their registration.
    pub(super) creating: usize,
    pub(super) files: BTreeMap<OsString, Arc<OwnedFd>>,
}

static UNFINISHED: std::sync::Mutex<Unfinished> = std::sync::Mutex::new(Unfinished {
    closed: false,
    creating: 0,
    files: BTreeMap::new(),
});

/// Signalled when a creation registers its file (or fails).
pub(super) static CREATED: std::sync::Condvar = std::sync::Condvar::new();

pub(super) fn unfinished() -> std::sync::MutexGuard<'static, Unfinished> {
    // Only sets and counters are edited under the lock: a panic cannot leave them torn.
    UNFINISHED.lock().unwrap_or_else(|p| p.into_inner())
}

/// For a process about to exit: removes the temporary file of every local write not
/// committed yet, and refuses every later create (so none appears after this). Creations
/// already in their `open` are waited for, at most `wait` (a hung filesystem may hold one
/// for ever; its file is then left, recognisable by [`TEMP_SUFFIX`]). Returns how many
/// files it removed.
pub fn discard_unfinished_local_writes(wait: Duration) -> usize {
    let deadline = std::time::Instant::now() + wait;
    let mut state = unfinished();
    state.closed = true;
    while state.creating > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        state = CREATED
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    let files = std::mem::take(&mut state.files);
    drop(state);
    files
        .iter()
        .filter(|&(temp, dir)| {
            rustix::fs::unlinkat(&**dir, temp.as_os_str(), AtFlags::empty()).is_ok()
        })
        .count()
}

#[async_trait]
impl Storage for LocalStorage {
    async fn list(&self, dir: &StorageUrl) -> Result<Vec<DirEntry>, StorageError> {
        // One trip to the blocking pool for the whole directory, not one per entry.
        self.on_walk("list", dir, |walk| walk.list()).await
    }

    async fn stat(&self, url: &StorageUrl) -> Result<Option<FileMeta>, StorageError> {
        self.on_walk("stat", url, |walk| walk.stat()).await
    }

    async fn open_read(&self, url: &StorageUrl) -> Result<Box<dyn ReadStream>, StorageError> {
        let (file, permissions) = self.on_walk("open", url, |walk| walk.open_read()).await?;
        Ok(Box::new(LocalReader {
            state: ReaderState::Idle(file, ChunkPool::take()),
            url: url.to_string(),
            permissions,
        }))
    }

    async fn create_with_permissions(
        &self,
        url: &StorageUrl,
        permissions: Option<u32>,
    ) -> Result<Box<dyn WriteStream>, StorageError> {
        // One trip to the blocking pool; the parent usually exists already.
        let writer = self
            .on_walk("create", url, move |walk| walk.create(permissions))
            .await?;
        Ok(Box::new(writer))
    }

    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.on_walk("delete", url, |walk| walk.delete()).await
    }

    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.on_walk("mkdirs", url, |walk| walk.mkdirs()).await
    }

    async fn sync_dir(&self, dir: &StorageUrl) -> Result<(), StorageError> {
        // A file's fsync does not cover its name: the rename lives in the directory.
        self.on_walk("sync", dir, |walk| walk.sync_dir()).await
    }
}
