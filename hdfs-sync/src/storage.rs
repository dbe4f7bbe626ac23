//! The storage interface both sites' filesystems are reached through, and its local backend.
//! Writes always go to a temporary name beside the target and are renamed on commit.
//!
//! The local backend is confined to a root (the `--from` or `--to` directory) and never
//! follows a symbolic link below it, on either side: each path is opened one component at a
//! time from the root's directory (`openat` with `O_NOFOLLOW`), so a link swapped in between
//! a check and a use is refused too. Files are read only when they are regular files, and a
//! copy is created no wider than its source's permission bits.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{StorageError, StorageErrorKind};
use crate::url::{Scheme, StorageUrl};

/// Size of the chunks streamed through copies (and through the bandwidth limiter).
pub const CHUNK_SIZE: usize = 1 << 20;

/// Suffix of in-progress writes; such files are never mistaken for finished ones.
pub const TEMP_SUFFIX: &str = ".twinsite-tmp";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    /// A symbolic link (never followed: `is_dir` is false even when it points at one).
    /// Backends that cannot tell (HDFS through hdfs-native) say `false`.
    pub is_symlink: bool,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub is_dir: bool,
    pub modified: Option<SystemTime>,
}

/// A whole small file and its permission bits, as [`Storage::read_bounded`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeFile {
    pub bytes: Vec<u8>,
    /// Permission bits of the file read (see [`ReadStream::permissions`]).
    pub permissions: Option<u32>,
}

/// A file being read, chunk by chunk.
#[async_trait]
pub trait ReadStream: Send {
    /// The next chunk, `None` at end of file.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError>;

    /// Permission bits (`0o777` at most) of the file being read, when the backend knows them:
    /// a copy is created with no more permission than its source.
    fn permissions(&self) -> Option<u32> {
        None
    }
}

/// A file being written under a temporary name; `commit` makes it visible under its own.
#[async_trait]
pub trait WriteStream: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Flushes, syncs and renames the temporary file onto the target (replacing it).
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
    /// Removes the temporary file; best effort.
    async fn abort(self: Box<Self>);
}

/// One filesystem: a site's HDFS, or a local directory.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Entries of a directory (not recursive). A missing directory is `NotFound`.
    async fn list(&self, dir: &StorageUrl) -> Result<Vec<DirEntry>, StorageError>;
    /// `None` when nothing exists at `url`.
    async fn stat(&self, url: &StorageUrl) -> Result<Option<FileMeta>, StorageError>;
    async fn open_read(&self, url: &StorageUrl) -> Result<Box<dyn ReadStream>, StorageError>;
    /// Starts writing `url` through a temporary file beside it; parents are created.
    async fn create(&self, url: &StorageUrl) -> Result<Box<dyn WriteStream>, StorageError> {
        self.create_with_permissions(url, None).await
    }
    /// Like [`Storage::create`], the new file getting at most the permission bits
    /// `permissions` (a copy passes its source's; `None`: the backend's default for new files).
    async fn create_with_permissions(
        &self,
        url: &StorageUrl,
        permissions: Option<u32>,
    ) -> Result<Box<dyn WriteStream>, StorageError>;
    /// Deletes a file, or a directory with everything below it. Missing is not an error.
    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError>;
    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError>;
    /// Makes the entries of directory `dir` (files renamed into it) durable. Backends whose
    /// renames are durable when they return (HDFS: the NameNode logs them) need do nothing.
    async fn sync_dir(&self, _dir: &StorageUrl) -> Result<(), StorageError> {
        Ok(())
    }

    /// Reads a whole file this process wrote (a manifest), or one whose size does not matter.
    /// Files from the outside whose size is not bounded elsewhere go through
    /// [`Storage::read_bounded`].
    async fn read_all(&self, url: &StorageUrl) -> Result<Vec<u8>, StorageError> {
        let mut stream = self.open_read(url).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads a whole file of at most `limit` bytes. A larger one is refused (`TooLarge`) by
    /// its size before any byte is read, or as soon as more than `limit` bytes arrive (a file
    /// still growing): never more than `limit` bytes are held.
    async fn read_bounded(&self, url: &StorageUrl, limit: u64) -> Result<WholeFile, StorageError> {
        let too_large = |size: &str| {
            StorageError::new(
                "read",
                url,
                StorageErrorKind::TooLarge,
                format!("{size} bytes, more than the {limit} this file may have"),
            )
        };
        let expected = match self.stat(url).await? {
            Some(meta) if meta.len > limit => return Err(too_large(&meta.len.to_string())),
            Some(meta) => meta.len,
            // Missing: `open_read` says so in its own words.
            None => 0,
        };
        let mut stream = self.open_read(url).await?;
        let permissions = stream.permissions();
        // The size was checked against `limit`, so this allocation is bounded.
        let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        while let Some(chunk) = stream.next_chunk().await? {
            if (bytes.len() as u64).saturating_add(chunk.len() as u64) > limit {
                return Err(too_large("grew while being read: over"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(WholeFile { bytes, permissions })
    }

    /// Writes a whole (small) file atomically.
    async fn write_all(&self, url: &StorageUrl, data: Bytes) -> Result<(), StorageError> {
        self.write_all_with_permissions(url, data, None).await
    }

    /// [`Storage::write_all`] with at most the permission bits `permissions`.
    async fn write_all_with_permissions(
        &self,
        url: &StorageUrl,
        data: Bytes,
        permissions: Option<u32>,
    ) -> Result<(), StorageError> {
        let mut writer = self.create_with_permissions(url, permissions).await?;
        if let Err(e) = writer.write(data).await {
            writer.abort().await;
            return Err(e);
        }
        writer.commit().await
    }
}

/// Opens the backend a URL's scheme names, confined to `root` (`file://` locally, confined
/// to that directory; `hdfs://`/`viewfs://` through hdfs-native, configured from the usual
/// Hadoop config directory and environment).
pub fn storage_for(root: &StorageUrl) -> Result<Arc<dyn Storage>, StorageError> {
    match root.scheme() {
        Scheme::File => Ok(Arc::new(LocalStorage::new(root.path()))),
        Scheme::Hdfs | Scheme::Viewfs => Ok(Arc::new(crate::hdfs::HdfsStorage::connect(root)?)),
    }
}

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
    root: Arc<Path>,
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
async fn blocking<T: Send + 'static>(
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

struct LocalWriter {
    /// `None` while a write is on the blocking pool, and for good once such a write's future
    /// was dropped.
    file: Option<std::fs::File>,
    /// The directory the temporary file and its target are in, opened without following links:
    /// the rename and the clean-up act on it, never on a path looked up again.
    dir: Arc<OwnedFd>,
    temp: OsString,
    target: OsString,
    url: String,
    /// Set once the temporary file is renamed onto the target.
    committed: bool,
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
struct Unfinished {
    /// Set by the discard: no new temporary file is created after it.
    closed: bool,
    /// Creations between their check of `closed` and their registration.
    creating: usize,
    files: BTreeMap<OsString, Arc<OwnedFd>>,
}

static UNFINISHED: std::sync::Mutex<Unfinished> = std::sync::Mutex::new(Unfinished {
    closed: false,
    creating: 0,
    files: BTreeMap::new(),
});

/// Signalled when a creation registers its file (or fails).
static CREATED: std::sync::Condvar = std::sync::Condvar::new();

fn unfinished() -> std::sync::MutexGuard<'static, Unfinished> {
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

/// Temporary name beside `target`: hidden, unique per writer, recognisable by its suffix.
pub fn temp_name(file_name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{file_name}.{}-{n}{TEMP_SUFFIX}", std::process::id())
}

/// Opens the root as the operator named it (it may be, or pass through, a link). On Linux
/// `O_PATH`: walking through a directory needs only search permission on it.
#[cfg(any(target_os = "linux", target_os = "android"))]
const ROOT: OFlags = OFlags::DIRECTORY.union(OFlags::CLOEXEC).union(OFlags::PATH);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const ROOT: OFlags = OFlags::DIRECTORY.union(OFlags::CLOEXEC);
/// Opens a directory below the root on the way to a path: never through a link.
const WALK: OFlags = ROOT.union(OFlags::NOFOLLOW);
/// Opens a directory to list or fsync it.
const READ_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

// `struct stat`'s field types differ between targets, hence the casts.
#[allow(clippy::unnecessary_cast)]
fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as rustix::fs::RawMode)
}

#[allow(clippy::unnecessary_cast)]
fn size(st: &Stat) -> u64 {
    u64::try_from(st.st_size as i64).unwrap_or(0)
}

#[allow(clippy::unnecessary_cast)]
fn permission_bits(st: &Stat) -> u32 {
    st.st_mode as u32 & 0o777
}

#[allow(clippy::unnecessary_cast)]
fn modified(st: &Stat) -> Option<SystemTime> {
    let seconds = u64::try_from(st.st_mtime as i64).ok()?;
    let nanos = u32::try_from(st.st_mtime_nsec as u64).ok()?;
    // A timestamp beyond what SystemTime holds is reported as unknown, not a panic.
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos.min(999_999_999)))
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown file type",
    }
}

/// The last component of a path and the directory holding it, opened without following a
/// link. `parent` is `None` when the path is the root itself, named as the operator wrote it.
struct Target {
    parent: Option<OwnedFd>,
    name: OsString,
}

impl Target {
    fn dir(&self) -> BorrowedFd<'_> {
        match &self.parent {
            Some(fd) => fd.as_fd(),
            None => CWD,
        }
    }

    /// Below the root nothing is followed; the root itself may be a link.
    fn no_follow(&self) -> OFlags {
        if self.parent.is_some() {
            OFlags::NOFOLLOW
        } else {
            OFlags::empty()
        }
    }

    fn stat_flags(&self) -> AtFlags {
        if self.parent.is_some() {
            AtFlags::SYMLINK_NOFOLLOW
        } else {
            AtFlags::empty()
        }
    }
}

/// One call's path, split into its components below the root. Runs on the blocking pool.
struct Walk {
    root: Arc<Path>,
    op: &'static str,
    /// The URL the call was given, named in every error.
    url: String,
    names: Vec<OsString>,
}

impl LocalStorage {
    fn walk(&self, op: &'static str, url: &StorageUrl) -> Result<Walk, StorageError> {
        let outside = |why: String| StorageError::new(op, url, StorageErrorKind::OutsideRoot, why);
        let below = Path::new(url.path())
            .strip_prefix(&self.root)
            .map_err(|_| {
                outside(format!(
                    "this storage reads and writes only below {}",
                    file_url(&self.root)
                ))
            })?;
        let mut names = Vec::new();
        for component in below.components() {
            match component {
                Component::Normal(name) => names.push(name.to_os_string()),
                other => {
                    return Err(outside(format!(
                        "`{}` is not a name below {}",
                        other.as_os_str().to_string_lossy(),
                        file_url(&self.root)
                    )));
                }
            }
        }
        Ok(Walk {
            root: self.root.clone(),
            op,
            url: url.to_string(),
            names,
        })
    }

    /// Runs `f` on the blocking pool with the walk of `url`.
    async fn on_walk<T: Send + 'static>(
        &self,
        op: &'static str,
        url: &StorageUrl,
        f: impl FnOnce(Walk) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let walk = self.walk(op, url)?;
        blocking(op, &url.to_string(), move || f(walk)).await?
    }
}

impl Walk {
    fn error(&self, kind: StorageErrorKind, message: impl ToString) -> StorageError {
        StorageError::new(self.op, &self.url, kind, message)
    }

    fn io(&self, err: impl Into<std::io::Error>) -> StorageError {
        StorageError::from_io(self.op, &self.url, &err.into())
    }

    /// The URL of the first `count` components below the root.
    fn url_of(&self, count: usize) -> String {
        let mut path = self.root.to_path_buf();
        path.extend(&self.names[..count]);
        file_url(&path)
    }

    fn link_refused(&self, count: usize) -> StorageError {
        self.error(
            StorageErrorKind::Symlink,
            format!(
                "{} is a symbolic link; nothing below {} is followed",
                self.url_of(count),
                file_url(&self.root)
            ),
        )
    }

    /// Why component `index` (in directory `dir`) could not be opened: a link is named as one
    /// (refused, not missing), anything else keeps its OS error.
    fn refused(&self, dir: BorrowedFd<'_>, index: usize, errno: Errno) -> StorageError {
        if matches!(errno, Errno::LOOP | Errno::NOTDIR | Errno::MLINK)
            && let Ok(st) = rustix::fs::statat(dir, &self.names[index], AtFlags::SYMLINK_NOFOLLOW)
        {
            match file_type(&st) {
                FileType::Symlink => return self.link_refused(index + 1),
                FileType::Directory => {}
                other if errno == Errno::NOTDIR => {
                    return self.error(
                        StorageErrorKind::Other,
                        format!(
                            "{} is {}, not a directory",
                            self.url_of(index + 1),
                            describe(other)
                        ),
                    );
                }
                _ => {}
            }
        }
        self.io(errno)
    }

    fn refused_target(&self, target: &Target, errno: Errno) -> StorageError {
        match &target.parent {
            Some(parent) => self.refused(parent.as_fd(), self.names.len() - 1, errno),
            None => self.io(errno),
        }
    }

    /// Opens the root, creating it (and its parents) first with `create`.
    fn open_root(&self, create: bool) -> Result<OwnedFd, StorageError> {
        match rustix::fs::openat(CWD, &*self.root, ROOT, Mode::empty()) {
            Err(Errno::NOENT) if create => {
                std::fs::create_dir_all(&self.root)
                    .map_err(|e| StorageError::from_io("mkdirs", &self.url, &e))?;
                rustix::fs::openat(CWD, &*self.root, ROOT, Mode::empty()).map_err(|e| self.io(e))
            }
            other => other.map_err(|e| self.io(e)),
        }
    }

    /// Opens the directory made of the first `count` components, one at a time and never
    /// through a link; with `create`, missing ones are made, then opened the same way.
    fn open_dir(&self, count: usize, create: bool) -> Result<OwnedFd, StorageError> {
        let mut dir = self.open_root(create)?;
        for (index, name) in self.names[..count].iter().enumerate() {
            let opened = match rustix::fs::openat(&dir, name, WALK, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(StorageError::from_io("mkdirs", &self.url, &e.into()));
                        }
                    }
                    rustix::fs::openat(&dir, name, WALK, Mode::empty())
                }
                other => other,
            };
            dir = opened.map_err(|e| self.refused(dir.as_fd(), index, e))?;
        }
        Ok(dir)
    }

    /// The last component and its directory (see [`Walk::open_dir`]).
    fn target(&self, create: bool) -> Result<Target, StorageError> {
        match self.names.split_last() {
            None => Ok(Target {
                parent: None,
                name: self.root.as_os_str().to_os_string(),
            }),
            Some((last, _)) => Ok(Target {
                parent: Some(self.open_dir(self.names.len() - 1, create)?),
                name: last.clone(),
            }),
        }
    }

    /// What is at the target itself (a link is reported as a link); `None`: nothing.
    fn lstat(&self, target: &Target) -> Result<Option<Stat>, StorageError> {
        match rustix::fs::statat(target.dir(), &target.name, target.stat_flags()) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Only regular files are read: opening a FIFO waits for a writer that may never come, and
    /// a device (`/dev/zero`) never ends.
    fn regular_file(&self, st: &Stat) -> Result<(), StorageError> {
        match file_type(st) {
            FileType::RegularFile => Ok(()),
            FileType::Symlink => Err(self.link_refused(self.names.len())),
            other => Err(self.error(
                StorageErrorKind::NotAFile,
                format!(
                    "{} is {}; only regular files are read",
                    self.url,
                    describe(other)
                ),
            )),
        }
    }

    fn list(&self) -> Result<Vec<DirEntry>, StorageError> {
        let target = self.target(false)?;
        let dir = rustix::fs::openat(
            target.dir(),
            &target.name,
            READ_DIR | target.no_follow(),
            Mode::empty(),
        )
        .map_err(|e| self.refused_target(&target, e))?;
        let mut out = Vec::new();
        for entry in Dir::read_from(&dir).map_err(|e| self.io(e))? {
            let entry = entry.map_err(|e| self.io(e))?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let st = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Deleted between readdir and stat: it is simply gone.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(self.io(e)),
            };
            let kind = file_type(&st);
            out.push(DirEntry {
                name: OsStr::from_bytes(name.to_bytes())
                    .to_string_lossy()
                    .into_owned(),
                is_dir: kind == FileType::Directory,
                is_symlink: kind == FileType::Symlink,
                len: size(&st),
            });
        }
        Ok(out)
    }

    fn stat(&self) -> Result<Option<FileMeta>, StorageError> {
        let target = match self.target(false) {
            Ok(target) => target,
            Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(st) = self.lstat(&target)? else {
            return Ok(None);
        };
        if file_type(&st) == FileType::Symlink {
            return Err(self.link_refused(self.names.len()));
        }
        Ok(Some(FileMeta {
            len: size(&st),
            is_dir: file_type(&st) == FileType::Directory,
            modified: modified(&st),
        }))
    }

    fn open_read(&self) -> Result<(std::fs::File, u32), StorageError> {
        let target = self.target(false)?;
        // Checked before opening, so a FIFO or a device is never opened at all.
        match self.lstat(&target)? {
            Some(st) => self.regular_file(&st)?,
            None => return Err(self.io(Errno::NOENT)),
        }
        // O_NONBLOCK: should a FIFO be swapped in after the check, opening it does not wait.
        let fd = rustix::fs::openat(
            target.dir(),
            &target.name,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | target.no_follow(),
            Mode::empty(),
        )
        .map_err(|e| self.refused_target(&target, e))?;
        // And checked again on what was opened, in case the name was replaced in between.
        let st = rustix::fs::fstat(&fd).map_err(|e| self.io(e))?;
        self.regular_file(&st)?;
        Ok((std::fs::File::from(fd), permission_bits(&st)))
    }

    fn create(&self, permissions: Option<u32>) -> Result<LocalWriter, StorageError> {
        let target = self.target(true)?;
        let Some(dir) = target.parent else {
            return Err(self.error(
                StorageErrorKind::Other,
                "the storage root is where files are written, not a file to write",
            ));
        };
        let temp = OsString::from(temp_name(&target.name.to_string_lossy()));
        // Created with the source's bits (never wider; the umask still applies), so a 0600
        // file is not readable by others at the peer even for a moment.
        let mode = Mode::from_raw_mode(permissions.map_or(0o666, |bits| bits & 0o777));
        let dir = Arc::new(dir);
        {
            let mut state = unfinished();
            if state.closed {
                return Err(self.error(
                    StorageErrorKind::Other,
                    "the process is stopping: no new file is written",
                ));
            }
            state.creating += 1;
        }
        let opened = rustix::fs::openat(
            &*dir,
            &temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
        );
        {
            let mut state = unfinished();
            state.creating -= 1;
            if opened.is_ok() {
                state.files.insert(temp.clone(), Arc::clone(&dir));
            }
        }
        CREATED.notify_all();
        let fd = opened.map_err(|e| self.io(e))?;
        Ok(LocalWriter {
            file: Some(std::fs::File::from(fd)),
            dir,
            temp,
            target: target.name,
            url: self.url.clone(),
            committed: false,
        })
    }

    fn delete(&self) -> Result<(), StorageError> {
        if self.names.is_empty() {
            return Err(self.error(
                StorageErrorKind::Other,
                "refusing to delete the storage root itself",
            ));
        }
        let target = match self.target(false) {
            Ok(target) => target,
            Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(st) = self.lstat(&target)? else {
            return Ok(());
        };
        let result = if file_type(&st) == FileType::Directory {
            remove_tree(target.dir(), &target.name)
        } else {
            // A link is removed itself, never what it points at.
            ignore_missing(rustix::fs::unlinkat(
                target.dir(),
                &target.name,
                AtFlags::empty(),
            ))
        };
        result.map_err(|e| self.io(e))
    }

    fn mkdirs(&self) -> Result<(), StorageError> {
        self.open_dir(self.names.len(), true).map(drop)
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        let target = self.target(false)?;
        let dir = rustix::fs::openat(
            target.dir(),
            &target.name,
            READ_DIR | target.no_follow(),
            Mode::empty(),
        )
        .map_err(|e| self.refused_target(&target, e))?;
        rustix::fs::fsync(&dir).map_err(|e| self.io(e))
    }
}

fn ignore_missing(result: rustix::io::Result<()>) -> rustix::io::Result<()> {
    match result {
        Err(Errno::NOENT) => Ok(()),
        other => other,
    }
}

/// Removes directory `name` in `parent` and everything below it, without following a link
/// (a link inside is removed, not entered) and without recursion (a deep hostile tree costs
/// file descriptors, which run out with an error, not stack).
fn remove_tree(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    let open = |dir: BorrowedFd<'_>, name: &OsStr| {
        rustix::fs::openat(dir, name, READ_DIR | OFlags::NOFOLLOW, Mode::empty())
    };
    // Directories being emptied, outermost first, each with its name in the one before.
    let mut stack: Vec<(OwnedFd, OsString)> = vec![(open(parent, name)?, name.to_os_string())];
    while let Some((dir, _)) = stack.last() {
        let mut subdirectory = None;
        for entry in Dir::read_from(dir)? {
            let entry = entry?;
            let entry_name = OsStr::from_bytes(entry.file_name().to_bytes());
            if matches!(entry_name.as_bytes(), b"." | b"..") {
                continue;
            }
            match rustix::fs::statat(dir, entry_name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
                Ok(st) if file_type(&st) == FileType::Directory => {
                    subdirectory = Some(entry_name.to_os_string());
                    break;
                }
                Ok(_) => ignore_missing(rustix::fs::unlinkat(dir, entry_name, AtFlags::empty()))?,
            }
        }
        match subdirectory {
            Some(sub) => {
                let fd = open(dir.as_fd(), &sub)?;
                stack.push((fd, sub));
            }
            None => {
                let Some((_, emptied)) = stack.pop() else {
                    break;
                };
                let holder = stack.last().map_or(parent, |(fd, _)| fd.as_fd());
                ignore_missing(rustix::fs::unlinkat(holder, &emptied, AtFlags::REMOVEDIR))?;
            }
        }
    }
    Ok(())
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
