//! The agent's TOML file, as written: every section optional, unknown keys
//! rejected (the parser's message names them). Values stay text here;
//! [`super::config`] checks them and names the key of any bad one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: Option<ServerSection>,
    #[serde(default)]
    pub profiling: ProfilingSection,
    /// Static series labels added to every profile.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `[[service]]` rules, tried in order before any inference.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceRuleSection>,
    #[serde(default)]
    pub processes: ProcessesSection,
    #[serde(default)]
    pub output: OutputSection,
    #[serde(default)]
    pub spool: SpoolSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub url: Option<String>,
    /// `pyroscope` (default) or `otlp`.
    pub protocol: Option<String>,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
    pub bearer_token_file: Option<PathBuf>,
    /// PEM bundle trusted in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` to a host other than loopback.
    pub insecure_http: Option<bool>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilingSection {
    pub window: Option<String>,
    pub frequency: Option<u32>,
    pub off_cpu: Option<bool>,
    pub off_cpu_min: Option<String>,
    pub off_cpu_sample_every: Option<u32>,
    /// `dwarf` (default) or `fp`.
    pub unwind: Option<String>,
    pub unwind_table_mib: Option<u32>,
    /// Distinct `thread_name` label values per service and window; the rest
    /// are labelled `other`.
    pub max_thread_names: Option<usize>,
    /// Go: the pprof label keys pushed as series labels (`span_id` always
    /// goes, per sample).
    pub go_labels: Option<Vec<String>>,
    /// Go: distinct allowed label sets per window; samples past it keep only
    /// `span_id`.
    pub max_go_label_sets: Option<usize>,
    /// Probe CUDA launches and sync calls (profiles `cuda_launch` and
    /// `gpu_wait`).
    pub cuda: Option<bool>,
    /// CUDA: launches and waits sampled with their stacks, per process and
    /// second.
    pub cuda_stacks_per_second: Option<u32>,
    /// CUDA: the most the launch probes may add to the launching threads,
    /// in percent of one core, on average.
    pub cuda_max_overhead_percent: Option<f64>,
}

/// Matches a process when every given pattern matches (regular expressions,
/// searched anywhere in the value; anchor them with `^...$`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    pub exe: Option<String>,
    pub comm: Option<String>,
    pub cmdline: Option<String>,
    pub cgroup: Option<String>,
    pub container: Option<String>,
    /// Only in include/exclude rules: the service name inferred or assigned.
    pub service: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRuleSection {
    /// The service name given to matching processes.
    pub name: Option<String>,
    pub exe: Option<String>,
    pub comm: Option<String>,
    pub cmdline: Option<String>,
    pub cgroup: Option<String>,
    pub container: Option<String>,
    /// Source links for Pyroscope (`service_repository`, `service_git_ref`,
    /// `service_root_path`); they win over the process's own.
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub root_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessesSection {
    /// When not empty, only processes matching one of these are profiled.
    #[serde(default)]
    pub include: Vec<MatchSection>,
    /// Processes matching one of these are never profiled.
    #[serde(default)]
    pub exclude: Vec<MatchSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub directory: Option<PathBuf>,
    pub max_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    pub directory: Option<PathBuf>,
    pub max_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `127.0.0.1:9464`, or a bare port (then on loopback).
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
}
