//! Paths below a local root, opened one component at a time with `O_NOFOLLOW` (`Walk`), and
//! what each storage call does there. It must never follow a link below the root nor recurse
//! on a hostile tree.

use super::local::{CREATED, LocalStorage, LocalWriter, blocking, unfinished};
use super::*;

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
pub(super) struct Walk {
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
    pub(super) async fn on_walk<T: Send + 'static>(
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

    pub(super) fn list(&self) -> Result<Vec<DirEntry>, StorageError> {
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

    pub(super) fn stat(&self) -> Result<Option<FileMeta>, StorageError> {
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

    pub(super) fn open_read(&self) -> Result<(std::fs::File, u32), StorageError> {
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

    pub(super) fn create(&self, permissions: Option<u32>) -> Result<LocalWriter, StorageError> {
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

    pub(super) fn delete(&self) -> Result<(), StorageError> {
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

    pub(super) fn mkdirs(&self) -> Result<(), StorageError> {
        self.open_dir(self.names.len(), true).map(drop)
    }

    pub(super) fn sync_dir(&self) -> Result<(), StorageError> {
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
