//! Files parsed for symbolization. Large symbol tables without DWARF get a
//! compact [`SymbolIndex`]; every other file its own blazesym instance, so
//! that each can be dropped on its own: blazesym keeps what it parsed (a
//! symbol index, decompressed DWARF, the file's mapping) for as long as the
//! instance lives. A file is dropped once no address needed it for `idle`;
//! at most `max` files are held, least recently used dropped first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blazesym::symbolize::Symbolizer as Blaze;

use crate::symbol_index::SymbolIndex;

/// What a file was parsed into.
pub enum Parser {
    Index(SymbolIndex),
    Blaze(Box<Blaze>),
}

impl Parser {
    fn open(path: &Path) -> Self {
        match std::fs::File::open(path)
            .ok()
            .and_then(|f| SymbolIndex::open(&f))
        {
            Some(index) => {
                log::debug!(
                    "{}: compact symbol index, {} KiB",
                    path.display(),
                    index.bytes() >> 10
                );
                Self::Index(index)
            }
            None => Self::Blaze(Box::new(
                Blaze::builder()
                    .enable_code_info(true)
                    .enable_inlined_fns(true)
                    // blazesym demangles plain C names (`a` -> `signed char`): we demangle.
                    .enable_demangling(false)
                    .build(),
            )),
        }
    }
}

struct Parsed {
    parser: Parser,
    last_used: Instant,
}

pub struct ParsedFiles {
    files: HashMap<PathBuf, Parsed>,
    idle: Duration,
    max: usize,
    released: u64,
}

impl ParsedFiles {
    pub fn new(idle: Duration, max: usize) -> Self {
        Self {
            files: HashMap::new(),
            idle,
            max: max.max(1),
            released: 0,
        }
    }

    /// What holds `path` parsed, made (and the least recently used file
    /// dropped, when `max` are held) if it is new.
    pub fn get(&mut self, path: &Path) -> &Parser {
        if !self.files.contains_key(path) && self.files.len() >= self.max {
            let oldest = self
                .files
                .iter()
                .min_by_key(|(_, parsed)| parsed.last_used)
                .map(|(path, _)| path.clone());
            if let Some(oldest) = oldest {
                self.drop_file(&oldest);
            }
        }
        let parsed = self.files.entry(path.to_owned()).or_insert_with(|| Parsed {
            parser: Parser::open(path),
            last_used: Instant::now(),
        });
        parsed.last_used = Instant::now();
        &parsed.parser
    }

    /// Drops every file no address needed for `idle`.
    pub fn release_idle(&mut self) {
        let idle: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, parsed)| parsed.last_used.elapsed() >= self.idle)
            .map(|(path, _)| path.clone())
            .collect();
        for path in idle {
            self.drop_file(&path);
        }
    }

    fn drop_file(&mut self, path: &Path) {
        if self.files.remove(path).is_some() {
            log::debug!("released parsed file {}", path.display());
            self.released += 1;
        }
    }

    /// Files held now.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Files dropped so far (idle, or least recently used).
    pub fn released(&self) -> u64 {
        self.released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_max_and_drops_the_least_recently_used() {
        let mut files = ParsedFiles::new(Duration::from_secs(3600), 2);
        files.get(Path::new("/a"));
        files.get(Path::new("/b"));
        files.get(Path::new("/a"));
        files.get(Path::new("/c"));
        assert_eq!(files.len(), 2);
        assert!(files.files.contains_key(Path::new("/a")));
        assert!(!files.files.contains_key(Path::new("/b")));
        assert_eq!(files.released(), 1);
    }

    #[test]
    fn idle_files_are_dropped() {
        let mut files = ParsedFiles::new(Duration::ZERO, 8);
        files.get(Path::new("/a"));
        files.release_idle();
        assert_eq!((files.len(), files.released()), (0, 1));
    }
}
