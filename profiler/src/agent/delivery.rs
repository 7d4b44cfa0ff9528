//! The agent's delivery side (async): takes finished windows and either
//! writes them to the local directory, or sends them to Pyroscope (push
//! API) or an OTLP endpoint with retries, spooling to disk while the server
//! is unreachable and replaying the spool, oldest first, when it is back.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::collector::{WindowBatch, WindowProfile};
use super::metrics::{add, set, Metrics};
use crate::export::bounded_dir::BoundedDir;
use crate::export::directory::ProfileDir;
use crate::export::otlp;
use crate::export::push_client::{Protocol, PushClient, PushError};
use crate::export::push_proto;
use crate::export::pyroscope::{encode_request, Series};
use crate::profile::ProfileKind;

/// Backoff between attempts while the server fails: doubling from the
/// first value up to the cap, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The longest a 429's Retry-After is honoured for.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);
/// At shutdown, how long pushing what is left may take before it is spooled.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);
/// Requests held in memory when the spool cannot be written.
const MEMORY_QUEUE_MAX: usize = 64;

/// Spooled requests of each protocol: a spool left by a run that spoke the
/// other one is not replayed to the wrong server.
fn spool_suffix(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Pyroscope => ".push",
        Protocol::Otlp => ".otlp",
    }
}

fn check_spooled(protocol: Protocol, body: &[u8]) -> Result<(), String> {
    match protocol {
        Protocol::Pyroscope => push_proto::check_spooled(body).map_err(|e| e.to_string()),
        Protocol::Otlp => otlp::check_spooled(body).map_err(|e| e.to_string()),
    }
}

fn kind_name(kind: ProfileKind) -> (&'static str, &'static str) {
    // (series __name__, file infix)
    match kind {
        ProfileKind::OnCpu { .. } => ("process_cpu", "cpu"),
        ProfileKind::OffCpu => ("offcpu", "offcpu"),
        ProfileKind::CudaLaunch => ("cuda_launch", "cuda"),
        ProfileKind::GpuWait => ("gpu_wait", "gpuwait"),
    }
}

/// Writes every window into `dir` until the collector stops.
pub async fn to_directory(
    mut rx: mpsc::Receiver<WindowBatch>,
    mut dir: ProfileDir,
    metrics: Arc<Metrics>,
) {
    let mut reported = false;
    while let Some(batch) = rx.recv().await {
        for profile in &batch.profiles {
            let kind = kind_name(profile.kind).1;
            match dir.write(batch.start, &profile.service.name, kind, &profile.pprof_gz) {
                Ok(written) => {
                    add(&metrics.profiles_written, 1);
                    add(&metrics.profiles_removed, written.removed);
                }
                Err(e) => {
                    add(&metrics.write_errors, 1);
                    if !reported {
                        reported = true;
                        tracing::error!("cannot write profiles to {}: {e:#}", dir.path().display());
                    }
                }
            }
        }
    }
}

/// One encoded push request, named for its place in the spool.
struct Request {
    name: String,
    body: Vec<u8>,
}

/// The requests of one window: one per service, its kinds as series (push
/// API) or as profiles of one resource (OTLP).
fn requests(
    protocol: Protocol,
    batch: &WindowBatch,
    labels: &BTreeMap<String, String>,
    seq: &mut u64,
) -> Vec<Request> {
    let mut by_service: BTreeMap<&str, Vec<&WindowProfile>> = BTreeMap::new();
    for profile in &batch.profiles {
        by_service
            .entry(profile.service.name.as_str())
            .or_default()
            .push(profile);
    }
    let millis = batch
        .start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    by_service
        .into_iter()
        .filter_map(|(service, profiles)| {
            let label_sets: Vec<Vec<(String, String)>> =
                profiles.iter().map(|p| series_labels(p, labels)).collect();
            let body = match protocol {
                Protocol::Pyroscope => encode_request(
                    profiles
                        .iter()
                        .zip(&label_sets)
                        .map(|(p, labels)| Series {
                            labels,
                            pprof_gz: p.pprof_gz.clone(),
                        })
                        .collect(),
                ),
                Protocol::Otlp => {
                    let resource = otlp::resource(service, &label_sets[0]);
                    let kinds: Vec<(ProfileKind, &[u8])> = profiles
                        .iter()
                        .map(|p| (p.kind, p.pprof_gz.as_slice()))
                        .collect();
                    match otlp::encode_request(&resource, &kinds) {
                        Ok(body) => body,
                        Err(e) => {
                            tracing::warn!("cannot encode the OTLP request of {service}: {e}");
                            return None;
                        }
                    }
                }
            };
            *seq += 1;
            Some(Request {
                name: format!("{millis:013}-{seq:08}{}", spool_suffix(protocol)),
                body,
            })
        })
        .collect()
}

/// Series labels, sorted: `__name__`, `service_name`, the service's own
/// labels, then the static ones (which cannot override the first two).
fn series_labels(
    profile: &WindowProfile,
    static_labels: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut labels: BTreeMap<String, String> = static_labels.clone();
    labels.extend(profile.service.labels.clone());
    labels.insert("__name__".into(), kind_name(profile.kind).0.into());
    labels.insert("service_name".into(), profile.service.name.clone());
    labels.into_iter().collect()
}

struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Self {
            next: BACKOFF_FIRST,
            seed,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }

    /// The next delay: between half and all of the current step.
    fn delay(&mut self) -> Duration {
        // xorshift64: jitter only, no need for a real generator.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        let delay = self.next.mul_f64(fraction);
        self.next = (self.next * 2).min(BACKOFF_CAP);
        delay
    }
}

pub struct Pusher {
    client: PushClient,
    protocol: Protocol,
    spool: Option<BoundedDir>,
    /// Requests not yet on disk: new ones while the server is healthy, or
    /// all of them when the spool cannot be written.
    memory: VecDeque<Request>,
    labels: BTreeMap<String, String>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    failing: bool,
    next_attempt: Instant,
    rejected_statuses: HashSet<u16>,
    seq: u64,
    spool_error_reported: bool,
    spool_corrupt_reported: bool,
}

enum Attempt {
    /// Nothing left to send.
    Done,
    /// Sent as many as asked; more are waiting.
    More,
    /// The server failed: try again at `next_attempt`.
    Later,
}

impl Pusher {
    pub fn new(
        client: PushClient,
        protocol: Protocol,
        spool: Option<BoundedDir>,
        labels: BTreeMap<String, String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let pusher = Self {
            client,
            protocol,
            spool,
            memory: VecDeque::new(),
            labels,
            metrics,
            backoff: Backoff::new(),
            failing: false,
            next_attempt: Instant::now(),
            rejected_statuses: HashSet::new(),
            seq: 0,
            spool_error_reported: false,
            spool_corrupt_reported: false,
        };
        if let Some(spool) = &pusher.spool {
            if !spool.is_empty() {
                tracing::info!(
                    "{} requests ({} bytes) left in the spool {} by an earlier run; replaying them",
                    spool.len(),
                    spool.bytes(),
                    spool.path().display()
                );
            }
        }
        pusher.update_spool_metrics();
        pusher
    }

    /// Pushes windows until the collector stops, then flushes.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WindowBatch>) {
        loop {
            let pending = self.pending();
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => self.enqueue(&batch),
                    None => break,
                },
                // One request at a time, so that new windows are taken in
                // between however slow the server answers.
                () = tokio::time::sleep_until(self.next_attempt), if pending => {
                    if let Attempt::More = self.attempt(1).await {
                        self.next_attempt = Instant::now();
                    }
                }
            }
        }
        self.flush().await;
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn pending(&self) -> bool {
        !self.memory.is_empty() || self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn enqueue(&mut self, batch: &WindowBatch) {
        for request in requests(self.protocol, batch, &self.labels, &mut self.seq) {
            self.memory.push_back(request);
        }
        if self.failing {
            self.spill(usize::MAX);
        }
        // A server that answers slower than windows come: the oldest wait
        // on disk rather than in memory (dropped only without a spool).
        if self.memory.len() > MEMORY_QUEUE_MAX {
            self.spill(self.memory.len() - MEMORY_QUEUE_MAX);
        }
        while self.memory.len() > MEMORY_QUEUE_MAX {
            self.memory.pop_front();
            add(&self.metrics.spool_dropped, 1);
        }
    }

    /// Moves up to `count` requests from memory to the spool, oldest first.
    fn spill(&mut self, count: usize) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let mut moved = 0;
        while let Some(request) = self.memory.front().filter(|_| moved < count) {
            match spool.add(&request.name, &request.body) {
                Ok(evicted) => {
                    add(&self.metrics.spool_dropped, evicted);
                    if evicted > 0 {
                        tracing::warn!("spool full: dropped the {evicted} oldest requests");
                    }
                    self.memory.pop_front();
                    moved += 1;
                }
                Err(e) => {
                    add(&self.metrics.write_errors, 1);
                    if !self.spool_error_reported {
                        self.spool_error_reported = true;
                        tracing::error!("cannot spool to disk, keeping up to {MEMORY_QUEUE_MAX} requests in memory: {e:#}");
                    }
                    break;
                }
            }
        }
        self.update_spool_metrics();
    }

    fn update_spool_metrics(&self) {
        let (files, bytes) = self
            .spool
            .as_ref()
            .map_or((0, 0), |s| (s.len() as u64, s.bytes()));
        set(&self.metrics.spool_files, files);
        set(&self.metrics.spool_bytes, bytes);
    }

    /// The oldest request: from the spool first, then memory.
    fn next_request(&self) -> Option<(bool, String, Vec<u8>)> {
        if let Some(spool) = &self.spool {
            if let Some(name) = spool.oldest() {
                return match spool.read(name) {
                    Ok(body) => Some((true, name.to_owned(), body)),
                    // Unreadable: hand back an empty body, which the
                    // caller drops.
                    Err(_) => Some((true, name.to_owned(), Vec::new())),
                };
            }
        }
        self.memory
            .front()
            .map(|r| (false, r.name.clone(), r.body.clone()))
    }

    fn done_with(&mut self, from_spool: bool, name: &str) {
        if from_spool {
            if let Some(spool) = self.spool.as_mut() {
                spool.remove(name);
            }
            self.update_spool_metrics();
        } else {
            self.memory.pop_front();
        }
    }

    /// Sends up to `limit` requests in order, until none is left or the
    /// server fails.
    async fn attempt(&mut self, limit: usize) -> Attempt {
        let mut sent = 0;
        while let Some((from_spool, name, body)) = self.next_request() {
            if sent == limit {
                return Attempt::More;
            }
            sent += 1;
            if from_spool {
                let checked = if body.is_empty() {
                    Err("unreadable".to_owned())
                } else {
                    check_spooled(self.protocol, &body)
                };
                if let Err(why) = checked {
                    add(&self.metrics.spool_corrupt, 1);
                    if !self.spool_corrupt_reported {
                        self.spool_corrupt_reported = true;
                        tracing::warn!("dropping spooled request {name}: {why} (further ones are only counted: smolder_spool_corrupt_total)");
                    }
                    self.done_with(from_spool, &name);
                    continue;
                }
            }
            let size = body.len() as u64;
            let started = std::time::Instant::now();
            let result = self.client.push(body).await;
            self.metrics.observe_push(started.elapsed());
            match result {
                Ok(()) => {
                    add(&self.metrics.pushes_ok, 1);
                    add(&self.metrics.bytes_pushed, size);
                    if self.failing {
                        self.failing = false;
                        tracing::info!(
                            "the server accepts pushes again; replaying what was spooled"
                        );
                    }
                    self.backoff.reset();
                    self.done_with(from_spool, &name);
                }
                Err(e @ (PushError::Rejected { .. } | PushError::PartlyRejected { .. })) => {
                    add(&self.metrics.pushes_rejected, 1);
                    let status = match &e {
                        PushError::Rejected { status, .. } => status.as_u16(),
                        _ => 200,
                    };
                    if self.rejected_statuses.insert(status) {
                        tracing::error!(
                            "the server refused a push: {e} (not retried; further ones like it are only counted)"
                        );
                    }
                    self.done_with(from_spool, &name);
                }
                Err(e) => {
                    let delay = match &e {
                        PushError::RateLimited {
                            retry_after: Some(after),
                            ..
                        } => (*after).min(RETRY_AFTER_CAP),
                        _ => self.backoff.delay(),
                    };
                    if matches!(e, PushError::RateLimited { .. }) {
                        add(&self.metrics.pushes_rate_limited, 1);
                    } else {
                        add(&self.metrics.pushes_failed, 1);
                    }
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(
                            "push failed: {e:#}; spooling windows and retrying (next in {:.1}s)",
                            delay.as_secs_f64()
                        );
                    }
                    self.spill(usize::MAX);
                    self.next_attempt = Instant::now() + delay;
                    return Attempt::Later;
                }
            }
        }
        Attempt::Done
    }

    /// At shutdown: one bounded try to send what is left; the rest goes to
    /// the spool for the next run.
    async fn flush(&mut self) {
        if self.pending() && !self.failing {
            match tokio::time::timeout(FLUSH_DEADLINE, self.attempt(usize::MAX)).await {
                Ok(Attempt::Done) => {}
                Ok(Attempt::Later | Attempt::More) | Err(_) => {
                    tracing::warn!("could not push everything before exiting")
                }
            }
        }
        self.spill(usize::MAX);
        if let Some(spool) = &self.spool {
            if !spool.is_empty() {
                tracing::info!(
                    "{} requests stay in {} for the next run",
                    spool.len(),
                    spool.path().display()
                );
            }
        }
        if !self.memory.is_empty() {
            tracing::warn!(
                "{} requests lost: the spool could not be written",
                self.memory.len()
            );
        }
    }
}

/// Opens the spool, keeping only our own files.
pub fn open_spool(
    path: &std::path::Path,
    max_bytes: u64,
    protocol: Protocol,
) -> Result<BoundedDir, crate::export::bounded_dir::DirError> {
    let suffix = spool_suffix(protocol);
    BoundedDir::open(path, max_bytes, |name| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::services::Service;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new();
        let first = b.delay();
        assert!(first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST);
        for _ in 0..20 {
            assert!(b.delay() <= BACKOFF_CAP);
        }
        assert!(b.delay() >= BACKOFF_CAP / 2);
        b.reset();
        assert!(b.delay() <= BACKOFF_FIRST);
    }

    #[test]
    fn one_request_per_service_with_sorted_labels() {
        let service = |name: &str| {
            Arc::new(Service {
                name: name.into(),
                labels: BTreeMap::from([("namespace".to_owned(), "ml".to_owned())]),
            })
        };
        let profile = |s: &Arc<Service>, kind| WindowProfile {
            service: s.clone(),
            kind,
            pprof_gz: vec![1],
        };
        let (a, b) = (service("a"), service("b"));
        let batch = WindowBatch {
            start: UNIX_EPOCH + Duration::from_millis(1500),
            profiles: vec![
                profile(&a, ProfileKind::OnCpu { frequency_hz: 19 }),
                profile(&b, ProfileKind::OnCpu { frequency_hz: 19 }),
                profile(&a, ProfileKind::OffCpu),
            ],
        };
        let statics = BTreeMap::from([
            ("host_name".to_owned(), "h".to_owned()),
            ("service_name".to_owned(), "x".to_owned()),
        ]);
        let mut seq = 0;
        let reqs = requests(Protocol::Pyroscope, &batch, &statics, &mut seq);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].name, "0000000001500-00000001.push");
        let labels = series_labels(&batch.profiles[2], &statics);
        let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["__name__", "host_name", "namespace", "service_name"]
        );
        assert_eq!(labels[0].1, "offcpu");
        assert_eq!(labels[3].1, "a");
    }

    #[test]
    fn otlp_requests_hold_one_resource_per_service_and_spool_apart() {
        use crate::export::otlp_proto::ExportProfilesServiceRequest;
        use prost::Message;
        let service = Arc::new(Service {
            name: "api".into(),
            labels: BTreeMap::from([("service_version".to_owned(), "1.2".to_owned())]),
        });
        let pprof =
            crate::encode::encode_pprof(&crate::profile::fixtures::small_profile()).unwrap();
        let profile = |kind| WindowProfile {
            service: service.clone(),
            kind,
            pprof_gz: pprof.clone(),
        };
        let batch = WindowBatch {
            start: UNIX_EPOCH + Duration::from_millis(1500),
            profiles: vec![
                profile(ProfileKind::OnCpu { frequency_hz: 19 }),
                profile(ProfileKind::OffCpu),
            ],
        };
        let statics = BTreeMap::from([("host_name".to_owned(), "h".to_owned())]);
        let mut seq = 0;
        let reqs = requests(Protocol::Otlp, &batch, &statics, &mut seq);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].name, "0000000001500-00000001.otlp");
        check_spooled(Protocol::Otlp, &reqs[0].body).unwrap();
        assert!(check_spooled(Protocol::Pyroscope, &reqs[0].body).is_err());
        let request = ExportProfilesServiceRequest::decode(reqs[0].body.as_slice()).unwrap();
        let resource = &request.resource_profiles[0];
        let keys: Vec<&str> = resource
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        assert_eq!(keys, ["host.name", "service.name", "service.version"]);
        assert_eq!(resource.scope_profiles[0].profiles.len(), 2);
    }
}
