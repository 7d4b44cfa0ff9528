//! debuginfod client: fetches a binary's separate debug file by build-id
//! (`GET URL/buildid/HEX/debuginfo`). Off unless `DEBUGINFOD_URLS` is set.
//! Files are cached on disk within a byte budget, oldest evicted first.
//! Requests have timeouts, and run at symbolization time, never on the
//! sampling path.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use symbolizer::{BuildId, DebugInfoSource};

/// Largest debug file accepted (a hostile server must not fill the disk).
const MAX_FILE_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebuginfodConfig {
    /// Server base URLs, tried in order.
    pub urls: Vec<String>,
    pub cache_dir: PathBuf,
    /// The cache is trimmed to this many bytes.
    pub max_cache_bytes: u64,
    pub timeout: Duration,
}

impl DebuginfodConfig {
    /// From the environment variables elfutils defines: `DEBUGINFOD_URLS`
    /// (space-separated; unset or empty: off), `DEBUGINFOD_CACHE_PATH`,
    /// `DEBUGINFOD_TIMEOUT` (seconds).
    pub fn from_env() -> Option<Self> {
        let urls: Vec<String> = std::env::var("DEBUGINFOD_URLS")
            .ok()?
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let cache_dir = std::env::var_os("DEBUGINFOD_CACHE_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(default_cache_dir);
        let timeout = std::env::var("DEBUGINFOD_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(30), Duration::from_secs);
        Some(Self {
            urls,
            cache_dir,
            max_cache_bytes: 1 << 30,
            timeout,
        })
    }
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("smolder/debuginfod")
}

/// Counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct DebuginfodStats {
    pub fetched: AtomicU64,
    pub cache_hits: AtomicU64,
    pub not_found: AtomicU64,
    pub failures: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed")]
    Http(#[from] reqwest::Error),
    #[error("server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("cannot write the cache")]
    Io(#[from] std::io::Error),
    #[error("the answer is not an ELF file")]
    NotElf,
    #[error("the answer is over {MAX_FILE_BYTES} bytes")]
    TooLarge,
}

pub struct Debuginfod {
    config: DebuginfodConfig,
    client: reqwest::blocking::Client,
    stats: Arc<DebuginfodStats>,
    reported: bool,
}

impl Debuginfod {
    pub fn new(config: DebuginfodConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("smolder/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            config,
            client,
            stats: Arc::default(),
            reported: false,
        })
    }

    pub fn stats(&self) -> Arc<DebuginfodStats> {
        Arc::clone(&self.stats)
    }

    fn fetch(&self, url: &str, build_id: &str, target: &Path) -> Result<bool, FetchError> {
        let mut response = self
            .client
            .get(format!("{url}/buildid/{build_id}/debuginfo"))
            .send()?;
        match response.status() {
            s if s.is_success() => {}
            reqwest::StatusCode::NOT_FOUND => return Ok(false),
            s => return Err(FetchError::Status(s)),
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_FILE_BYTES)
        {
            return Err(FetchError::TooLarge);
        }
        std::fs::create_dir_all(&self.config.cache_dir)?;
        let partial = target.with_extension("partial");
        let mut file = File::create(&partial)?;
        let copied = std::io::copy(&mut (&mut response).take(MAX_FILE_BYTES + 1), &mut file)?;
        file.flush()?;
        drop(file);
        let mut magic = [0u8; 4];
        let is_elf = File::open(&partial)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        if copied > MAX_FILE_BYTES || !is_elf {
            let _ = std::fs::remove_file(&partial);
            return Err(if is_elf {
                FetchError::TooLarge
            } else {
                FetchError::NotElf
            });
        }
        std::fs::rename(&partial, target)?;
        Ok(true)
    }

    /// Deletes the least recently used files until the cache fits its budget.
    fn trim_cache(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.cache_dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| {
                    (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, size, path) in files {
            if total <= self.config.max_cache_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

impl DebugInfoSource for Debuginfod {
    fn debug_file(&mut self, build_id: &BuildId) -> Option<PathBuf> {
        let hex = build_id.to_string();
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let target = self.config.cache_dir.join(format!("{hex}.debug"));
        if target.is_file() {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            // Mark as recently used for the eviction order.
            let _ = File::options()
                .write(true)
                .open(&target)
                .and_then(|f| f.set_modified(SystemTime::now()));
            return Some(target);
        }
        for url in self.config.urls.clone() {
            match self.fetch(&url, &hex, &target) {
                Ok(true) => {
                    self.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    self.trim_cache();
                    return Some(target);
                }
                Ok(false) => {}
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    if !self.reported {
                        self.reported = true;
                        tracing::warn!(
                            "debuginfod at {url} failed ({e}: {}); frames without local debug info stay module+offset",
                            std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
                        );
                    }
                }
            }
        }
        self.stats.not_found.fetch_add(1, Ordering::Relaxed);
        None
    }
}
