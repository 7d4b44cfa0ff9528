//! A directory of files kept under a total size: files are added under
//! names that sort in arrival order, and the oldest go first when the
//! directory would grow past its bound. Used for the local profile output
//! and the push spool. Files are written whole (to a temporary name, then
//! renamed), so a crash never leaves half a file under a real name.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const TEMP_SUFFIX: &str = ".partial";

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot create or read directory {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct BoundedDir {
    path: PathBuf,
    max_bytes: u64,
    /// Files by name (arrival order) and their sizes.
    files: BTreeMap<String, u64>,
    bytes: u64,
}

impl BoundedDir {
    /// Opens (creating it, mode 0700) `path`, and takes stock of the files
    /// whose names `keep` accepts; leftovers of interrupted writes are removed.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Self, DirError> {
        let open_error = |source| DirError::Open {
            path: path.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(open_error)?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(path).map_err(open_error)? {
            let entry = entry.map_err(open_error)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if name.ends_with(TEMP_SUFFIX) {
                let _ = std::fs::remove_file(entry.path());
            } else if keep(&name) {
                files.insert(name, meta.len());
            }
        }
        let bytes = files.values().sum();
        Ok(Self {
            path: path.to_owned(),
            max_bytes,
            files,
            bytes,
        })
    }

    /// Writes `name` (mode 0600); first removes the oldest files until it
    /// fits. Returns how many files were removed to make room.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<u64, DirError> {
        let size = data.len() as u64;
        let mut evicted = 0;
        while self.bytes + size > self.max_bytes {
            if self.pop_oldest().is_none() {
                break;
            }
            evicted += 1;
        }
        let target = self.path.join(name);
        let temp = self.path.join(format!("{name}{TEMP_SUFFIX}"));
        let write_error = |source| DirError::Write {
            path: target.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(write_error)?;
        let written = file
            .write_all(data)
            .and_then(|()| file.sync_data())
            .and_then(|()| std::fs::rename(&temp, &target));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(write_error(e));
        }
        if let Some(old) = self.files.insert(name.to_owned(), size) {
            self.bytes -= old;
        }
        self.bytes += size;
        Ok(evicted)
    }

    /// The oldest file's name.
    pub fn oldest(&self) -> Option<&str> {
        self.files.keys().next().map(String::as_str)
    }

    /// The newest file's name.
    pub fn newest(&self) -> Option<&str> {
        self.files.keys().next_back().map(String::as_str)
    }

    pub fn read(&self, name: &str) -> Result<Vec<u8>, DirError> {
        let path = self.path.join(name);
        std::fs::read(&path).map_err(|source| DirError::Read { path, source })
    }

    /// Removes a file (gone already is fine).
    pub fn remove(&mut self, name: &str) {
        if let Some(size) = self.files.remove(name) {
            self.bytes -= size;
            let _ = std::fs::remove_file(self.path.join(name));
        }
    }

    fn pop_oldest(&mut self) -> Option<String> {
        let name = self.oldest()?.to_owned();
        self.remove(&name);
        Some(name)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut d = BoundedDir::open(&path, 25, |_| true).unwrap();
        assert_eq!(d.add("001", &[0; 10]).unwrap(), 0);
        assert_eq!(d.add("002", &[0; 10]).unwrap(), 0);
        assert_eq!(d.add("003", &[0; 10]).unwrap(), 1);
        assert_eq!(
            (d.oldest(), d.newest(), d.bytes()),
            (Some("002"), Some("003"), 20)
        );
        std::fs::write(path.join("004.partial"), b"torn").unwrap();
        std::fs::write(path.join("README"), b"not ours").unwrap();
        let d = BoundedDir::open(&path, 25, |n| n.starts_with('0')).unwrap();
        assert_eq!((d.len(), d.bytes()), (2, 20));
        assert!(!path.join("004.partial").exists());
        assert_eq!(d.read("003").unwrap().len(), 10);
    }
}
