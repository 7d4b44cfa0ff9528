//! The service of every process seen, decided once per address space (a
//! process that execs is decided again) and forgotten when the process has
//! not been seen for a few windows. A process without an OpenTelemetry
//! process context is looked at again, once a window, for its first
//! minute: SDKs publish theirs while the application starts, often after
//! its first samples.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::AgentConfig;
use super::process_context;
use super::process_info::ProcessInfo;
use super::services::{self, Service};

/// Windows a process may go unseen before its entry is dropped.
const KEEP_WINDOWS: u64 = 4;
/// How long after it is first seen a process may still publish a process
/// context that names it.
const CONTEXT_WAIT: Duration = Duration::from_secs(60);

struct Entry {
    /// `None`: excluded by the include/exclude rules.
    service: Option<Arc<Service>>,
    last_window: u64,
    /// Until when, if it has no process context yet, it is looked at again.
    context_until: Option<Instant>,
    /// The window it was last looked at in.
    read_window: u64,
}

pub struct ServiceCache {
    entries: HashMap<(u32, u64), Entry>,
    /// One shared value per distinct service.
    interned: HashMap<Service, Arc<Service>>,
    window: u64,
}

impl ServiceCache {
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            interned: HashMap::new(),
            window: 0,
        }
    }

    /// The service of a process (`None` if it is not to be profiled),
    /// reading /proc the first time it is seen. `mm_id` 0 is a kernel thread.
    pub fn resolve(
        &mut self,
        pid: u32,
        mm_id: u64,
        comm: &str,
        config: &AgentConfig,
    ) -> Option<Arc<Service>> {
        let window = self.window;
        if let Some(entry) = self.entries.get_mut(&(pid, mm_id)) {
            entry.last_window = window;
            let look_again = entry.read_window < window
                && entry
                    .context_until
                    .is_some_and(|until| Instant::now() < until);
            if !look_again {
                return entry.service.clone();
            }
            entry.read_window = window;
            if !process_context::published(Path::new("/proc"), pid) {
                return entry.service.clone();
            }
        }
        let info = ProcessInfo::read(Path::new("/proc"), pid, comm);
        let mut service = services::infer(&info, &config.services);
        if mm_id == 0
            && !config
                .services
                .iter()
                .any(|r| services::matches(&r.matcher, &info, None))
        {
            service.name = "kernel".to_owned();
        }
        let selected = services::selected(&info, &service.name, &config.include, &config.exclude);
        let service = selected.then(|| {
            self.interned
                .entry(service.clone())
                .or_insert_with(|| Arc::new(service))
                .clone()
        });
        let context_until = (!info.process_context && mm_id != 0).then(|| {
            self.entries
                .get(&(pid, mm_id))
                .and_then(|e| e.context_until)
                .unwrap_or_else(|| Instant::now() + CONTEXT_WAIT)
        });
        self.entries.insert(
            (pid, mm_id),
            Entry {
                service: service.clone(),
                last_window: window,
                context_until,
                read_window: window,
            },
        );
        service
    }

    /// The service already decided for a process.
    pub fn get(&self, pid: u32, mm_id: u64) -> Option<Arc<Service>> {
        self.entries.get(&(pid, mm_id))?.service.clone()
    }

    /// Ends a window: returns the processes not seen for a while, now
    /// forgotten.
    pub fn end_window(&mut self) -> Vec<(u32, u64)> {
        self.window += 1;
        let window = self.window;
        let mut gone = Vec::new();
        self.entries.retain(|&key, entry| {
            let keep = window - entry.last_window <= KEEP_WINDOWS;
            if !keep {
                gone.push(key);
            }
            keep
        });
        self.interned.retain(|_, s| Arc::strong_count(s) > 1);
        gone
    }
}

impl Default for ServiceCache {
    fn default() -> Self {
        Self::new()
    }
}
