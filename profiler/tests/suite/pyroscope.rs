//! A real Grafana Pyroscope server on loopback for the agent tests: the
//! binary `cargo xtask pyroscope` builds and caches, started fresh per test
//! with every address pinned to 127.0.0.1 (see docs/contributing.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::harness::free_port;

/// The cached server binary: `SMOLDER_PYROSCOPE` (set by `cargo xtask test`)
/// or the xtask cache path.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SMOLDER_PYROSCOPE") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let path = Path::new(&home).join(".cache/smolder/pyroscope-v1.21.1/pyroscope");
    assert!(
        path.is_file(),
        "no Pyroscope server at {}: run `cargo xtask pyroscope` (cargo xtask test does)",
        path.display()
    );
    path
}

pub struct Pyroscope {
    child: Option<Child>,
    data: PathBuf,
    ports: [u16; 3],
    /// Extra flags for the next (re)start.
    pub extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Pyroscope {
    /// A fresh server with an empty data directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::new()
    }

    /// A fresh server with extra flags (limits, for instance).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut server = Self {
            child: None,
            data,
            ports: [free_port(), free_port(), free_port()],
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// The HTTP port (for a TLS front).
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Starts the server (again), on the same ports and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let [http, grpc, memberlist] = self.ports;
        let log = std::fs::File::create(self._dir.path().join("server.log")).unwrap();
        let child = Command::new(binary())
            .args([
                "-target=all",
                "-server.http-listen-address=127.0.0.1",
                &format!("-server.http-listen-port={http}"),
                "-server.grpc-listen-address=127.0.0.1",
                &format!("-server.grpc-listen-port={grpc}"),
                "-memberlist.bind-addr=127.0.0.1",
                &format!("-memberlist.bind-port={memberlist}"),
                "-memberlist.advertise-addr=127.0.0.1",
                &format!("-memberlist.advertise-port={memberlist}"),
                "-distributor.ring.instance-addr=127.0.0.1",
                "-distributor.ring.store=inmemory",
                "-overrides-exporter.ring.instance-addr=127.0.0.1",
                "-overrides-exporter.ring.store=inmemory",
                "-query-frontend.instance-addr=127.0.0.1",
                "-query-scheduler.ring.instance-addr=127.0.0.1",
                "-query-scheduler.ring.store=inmemory",
                "-ingester.lifecycler.addr=127.0.0.1",
                "-ring.store=inmemory",
                "-ingester.min-ready-duration=0s",
                &format!("-pyroscopedb.data-path={}", self.data.display()),
                "-self-profiling.disable-push=true",
                "-usage-stats.enabled=false",
            ])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting pyroscope");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = self.client();
        while Instant::now() < deadline {
            let ready = client
                .get(format!("{}/ready", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("pyroscope not ready in 60 s; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server gracefully (SIGTERM, then waits).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A connect-protocol JSON call to the querier.
    pub fn query(&self, method: &str, body: Value) -> Value {
        let response = self
            .client()
            .post(format!("{}/querier.v1.QuerierService/{method}", self.url()))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap();
        let status = response.status();
        let text = response.text().unwrap();
        assert!(status.is_success(), "{method}: {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub fn profile_types(&self, range: (i64, i64)) -> Vec<String> {
        let v = self.query("ProfileTypes", json!({"start": range.0, "end": range.1}));
        v["profileTypes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["ID"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn label_values(&self, name: &str, range: (i64, i64)) -> Vec<String> {
        let v = self.query(
            "LabelValues",
            json!({"name": name, "start": range.0, "end": range.1}),
        );
        names(&v)
    }

    /// The merged flame graph of a selector: stacks (root first) with their
    /// self values.
    pub fn stacks(&self, profile_type: &str, selector: &str, range: (i64, i64)) -> FlameGraph {
        let v = self.query(
            "SelectMergeStacktraces",
            json!({
                "profileTypeID": profile_type,
                "labelSelector": selector,
                "start": range.0,
                "end": range.1,
            }),
        );
        FlameGraph::from_json(&v["flamegraph"])
    }

    /// The merged flame graph of the samples of the given spans only
    /// (Pyroscope's span profiles).
    pub fn span_stacks(
        &self,
        profile_type: &str,
        selector: &str,
        span_ids: &[&str],
        range: (i64, i64),
    ) -> FlameGraph {
        let v = self.query(
            "SelectMergeSpanProfile",
            json!({
                "profileTypeID": profile_type,
                "labelSelector": selector,
                "spanSelector": span_ids,
                "start": range.0,
                "end": range.1,
            }),
        );
        FlameGraph::from_json(&v["flamegraph"])
    }

    /// Names of the series labels stored in a range.
    pub fn label_names(&self, range: (i64, i64)) -> Vec<String> {
        let v = self.query("LabelNames", json!({"start": range.0, "end": range.1}));
        names(&v)
    }

    /// Timestamps (ms) of the points of a selector's series at `step_s`.
    pub fn series_points(
        &self,
        profile_type: &str,
        selector: &str,
        range: (i64, i64),
        step_s: f64,
    ) -> Vec<(i64, f64)> {
        let v = self.query(
            "SelectSeries",
            json!({
                "profileTypeID": profile_type,
                "labelSelector": selector,
                "start": range.0,
                "end": range.1,
                "step": step_s,
            }),
        );
        let mut points = Vec::new();
        for series in v["series"].as_array().into_iter().flatten() {
            for p in series["points"].as_array().into_iter().flatten() {
                let ts = p["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .or_else(|| p["timestamp"].as_i64());
                if let (Some(ts), Some(value)) = (ts, p["value"].as_f64()) {
                    points.push((ts, value));
                }
            }
        }
        points.sort_by_key(|p| p.0);
        points
    }
}

/// The `names` array of a label query's answer.
fn names(v: &Value) -> Vec<String> {
    v["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Pyroscope {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pyroscope's flame graph format: `levels[i].values` holds quadruples
/// (offset from the previous node's end, total, self, name index).
#[derive(Debug)]
pub struct FlameGraph {
    pub names: Vec<String>,
    pub total: i64,
    /// (stack root first, self value).
    pub stacks: Vec<(Vec<String>, i64)>,
}

impl FlameGraph {
    fn from_json(v: &Value) -> Self {
        let names: Vec<String> = v["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        let total = v["total"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .or_else(|| v["total"].as_i64())
            .unwrap_or(0);
        let num = |x: &Value| {
            x.as_i64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(0)
        };
        // Each node: (start x, end x, name, self); children lie within parents.
        let mut levels: Vec<Vec<(i64, i64, usize, i64)>> = Vec::new();
        for level in v["levels"].as_array().into_iter().flatten() {
            let values: Vec<i64> = level["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(num)
                .collect();
            let mut x = 0;
            let mut nodes = Vec::new();
            for q in values.chunks(4) {
                if q.len() < 4 {
                    break;
                }
                let start = x + q[0];
                nodes.push((start, start + q[1], q[3] as usize, q[2]));
                x = start + q[1];
            }
            levels.push(nodes);
        }
        let mut stacks = Vec::new();
        for (depth, nodes) in levels.iter().enumerate() {
            for &(start, _end, name, self_value) in nodes {
                if self_value == 0 {
                    continue;
                }
                let mut stack = vec![names.get(name).cloned().unwrap_or_default()];
                for up in (0..depth).rev() {
                    if let Some(parent) = levels[up].iter().find(|p| p.0 <= start && start < p.1) {
                        stack.push(names.get(parent.2).cloned().unwrap_or_default());
                    }
                }
                stack.reverse();
                stacks.push((stack, self_value));
            }
        }
        Self {
            names,
            total,
            stacks,
        }
    }

    /// Share of the total whose stack holds `chain` in order (contiguous).
    pub fn share_with(&self, chain: &[&str]) -> f64 {
        let hit: i64 = self
            .stacks
            .iter()
            .filter(|(stack, _)| {
                stack
                    .windows(chain.len())
                    .any(|w| w.iter().zip(chain).all(|(a, b)| a == b))
            })
            .map(|(_, v)| v)
            .sum();
        hit as f64 / self.total.max(1) as f64
    }

    /// Of the samples whose stack (root first) satisfies `among`, the share
    /// that also satisfies `hit`, and how many samples that was.
    pub fn share_of(
        &self,
        among: impl Fn(&[String]) -> bool,
        hit: impl Fn(&[String]) -> bool,
    ) -> (f64, i64) {
        let (mut total, mut hits) = (0, 0);
        for (stack, value) in &self.stacks {
            if among(stack) {
                total += value;
                if hit(stack) {
                    hits += value;
                }
            }
        }
        (hits as f64 / total.max(1) as f64, total)
    }

    /// The `n` heaviest stacks that satisfy `pred`, each as its first and
    /// last frames (for failure messages).
    pub fn heaviest(&self, pred: impl Fn(&[String]) -> bool, n: usize) -> Vec<(i64, String)> {
        let mut picked: Vec<(i64, String)> = self
            .stacks
            .iter()
            .filter(|(stack, _)| pred(stack))
            .map(|(stack, value)| {
                let shown = if stack.len() <= 10 {
                    stack.join(";")
                } else {
                    format!(
                        "{};..;{}",
                        stack[..6].join(";"),
                        stack[stack.len() - 4..].join(";")
                    )
                };
                (*value, shown)
            })
            .collect();
        picked.sort_by_key(|p| std::cmp::Reverse(p.0));
        picked.truncate(n);
        picked
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
