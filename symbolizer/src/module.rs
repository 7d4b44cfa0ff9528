//! Binaries and shared libraries that processes map, shared by every process
//! that maps the same file.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Identity of a file on the host: device and inode, as `/proc/PID/maps`
/// reports them. Stable across mount namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
}

/// A GNU build-id note.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BuildId(pub Vec<u8>);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

/// A mapped file. The file stays open for as long as the module lives, so
/// that it can be symbolized after the process that mapped it has exited, and
/// after the file was deleted or replaced.
#[derive(Debug)]
pub struct Module {
    pub id: FileId,
    /// The path as the process saw it (display only: it may not exist here).
    pub path: PathBuf,
    pub build_id: Option<BuildId>,
    /// The open file; `None` when it could not be opened.
    pub(crate) file: Option<File>,
}

impl Module {
    /// Short name for frames that cannot be named: `libc.so.6`.
    pub fn short_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// A path through which this process can read the file, whatever mount
    /// namespace it lives in and whether or not it was deleted.
    pub(crate) fn open_path(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        self.file
            .as_ref()
            .map(|f| Path::new("/proc/self/fd").join(f.as_raw_fd().to_string()))
    }

    /// The open file, for readers other than the symbolizer (unwind tables):
    /// it works whatever mount namespace the file is in and after deletion.
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Whether the file could be opened.
    pub fn is_available(&self) -> bool {
        self.file.is_some()
    }
}
