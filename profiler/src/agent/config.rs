//! The agent's typed configuration, from three layers: the TOML file, then
//! `SMOLDER_*` environment variables, then command-line flags (the last one
//! set wins). Everything is checked here, once, at start; an error names the
//! key and where its value came from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use super::file::{FileConfig, MatchSection, ServerSection};
use crate::collect::{OffCpuConfig, UnwindConfig, UnwindMode, DEFAULT_CUDA_STACKS_PER_SECOND};
use crate::config::parse_duration;
pub use crate::export::push_client::Protocol;
use crate::logging::LogFormat;

/// Always-on default: peers (Alloy, the OpenTelemetry profiler) use 19-20 Hz.
pub const DEFAULT_FREQUENCY: u32 = 19;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15);
const DEFAULT_OUTPUT_DIR: &str = "/var/lib/smolder/profiles";
const DEFAULT_SPOOL_DIR: &str = "/var/lib/smolder/spool";
const DEFAULT_OUTPUT_MAX: u64 = 512 << 20;
const DEFAULT_SPOOL_MAX: u64 = 256 << 20;
const DEFAULT_MAX_THREAD_NAMES: usize = 16;
/// Distinct Go label sets pushed per window (each is a series).
const DEFAULT_MAX_GO_LABEL_SETS: usize = 64;

/// A Prometheus-style label name, not one of the reserved `__` ones.
fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("__")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}
const DEFAULT_METRICS_PORT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{key} (from {origin}): {reason}")]
    Invalid {
        key: String,
        origin: String,
        reason: String,
    },
    #[error("{key} (from {origin}): cannot read {path}")]
    Unreadable {
        key: String,
        origin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A credential: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Base URL; the protocol's path is appended.
    pub url: reqwest::Url,
    pub protocol: Protocol,
    pub tenant: Option<String>,
    pub auth: Auth,
    /// PEM certificates trusted in addition to the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// Where windows go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Pushed to Pyroscope, spooled to `spool` while it is unreachable.
    Server {
        server: Box<ServerConfig>,
        spool: BoundedDir,
    },
    /// The embedded default: pprof files in a local directory.
    Directory(BoundedDir),
}

/// A directory whose contents are kept under a size, oldest removed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedDir {
    pub path: PathBuf,
    pub max_bytes: u64,
}

/// A process pattern: every field given must match.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub exe: Option<Regex>,
    pub comm: Option<Regex>,
    pub cmdline: Option<Regex>,
    pub cgroup: Option<Regex>,
    pub container: Option<Regex>,
    pub service: Option<Regex>,
}

#[derive(Debug, Clone)]
pub struct ServiceRule {
    pub name: String,
    pub matcher: Matcher,
    /// Series labels the rule sets (`service_repository`, ...).
    pub labels: Vec<(&'static str, String)>,
}

/// CUDA probing in the agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentCudaConfig {
    /// Launches and waits sampled with their stacks, per process and second.
    pub stacks_per_second: u32,
    /// The most the launch probes may add to the launching threads, as a
    /// fraction of one core on average (0.01: 1%).
    pub max_overhead: f64,
}

/// The launch probes' default budget: 1% of a core.
pub const DEFAULT_CUDA_MAX_OVERHEAD_PERCENT: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub window: Duration,
    pub frequency: NonZeroU32,
    pub off_cpu: Option<OffCpuConfig>,
    /// Probe CUDA launches and sync calls.
    pub cuda: Option<AgentCudaConfig>,
    pub unwind: UnwindConfig,
    pub sink: Sink,
    /// Static series labels, `host_name` included.
    pub labels: BTreeMap<String, String>,
    pub services: Vec<ServiceRule>,
    pub include: Vec<Matcher>,
    pub exclude: Vec<Matcher>,
    pub max_thread_names: usize,
    /// Go pprof label keys pushed as series labels.
    pub go_labels: Vec<String>,
    pub max_go_label_sets: usize,
    pub metrics_address: Option<SocketAddr>,
    pub log_format: LogFormat,
}

/// Values from the environment and flags, by config key, with their origin.
#[derive(Debug, Default)]
pub struct Overrides(Vec<(&'static str, String, String)>);

impl Overrides {
    pub fn set(&mut self, key: &'static str, value: impl Into<String>, origin: impl Into<String>) {
        self.0.push((key, value.into(), origin.into()));
    }
}

/// Environment variables and the key each one sets.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("SMOLDER_SERVER_URL", "server.url"),
    ("SMOLDER_SERVER_PROTOCOL", "server.protocol"),
    ("SMOLDER_TENANT", "server.tenant"),
    ("SMOLDER_BASIC_AUTH_USER", "server.basic_auth_user"),
    (
        "SMOLDER_BASIC_AUTH_PASSWORD_FILE",
        "server.basic_auth_password_file",
    ),
    ("SMOLDER_BEARER_TOKEN_FILE", "server.bearer_token_file"),
    ("SMOLDER_CA_FILE", "server.ca_file"),
    ("SMOLDER_WINDOW", "profiling.window"),
    ("SMOLDER_FREQUENCY", "profiling.frequency"),
    ("SMOLDER_OFF_CPU", "profiling.off_cpu"),
    ("SMOLDER_CUDA", "profiling.cuda"),
    ("SMOLDER_UNWIND", "profiling.unwind"),
    ("SMOLDER_OUTPUT_DIR", "output.directory"),
    ("SMOLDER_SPOOL_DIR", "spool.directory"),
    ("SMOLDER_METRICS_ADDRESS", "metrics.address"),
    ("SMOLDER_LOG_FORMAT", "log.format"),
];

/// Secrets may come straight from the environment (never from flags).
const ENV_SECRETS: &[(&str, &str)] = &[
    ("SMOLDER_BASIC_AUTH_PASSWORD", "server.basic_auth_password"),
    ("SMOLDER_BEARER_TOKEN", "server.bearer_token"),
];

/// Other variables smolder reads, not config keys.
const ENV_OTHER: &[&str] = &["SMOLDER_LOG", "SMOLDER_CONFIG"];

/// Reads `SMOLDER_*` from `vars`; unknown names are returned to be warned about.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> (Overrides, Vec<String>) {
    let mut overrides = Overrides::default();
    let mut unknown = Vec::new();
    for (name, value) in vars {
        if !name.starts_with("SMOLDER_") {
            continue;
        }
        let key = ENV_KEYS
            .iter()
            .chain(ENV_SECRETS)
            .find(|(env, _)| *env == name)
            .map(|(_, key)| *key);
        match key {
            Some(key) => overrides.set(key, value, name),
            None if ENV_OTHER.contains(&name.as_str()) => {}
            None => unknown.push(name),
        }
    }
    (overrides, unknown)
}

/// Loads the file (if any), applies the overrides in order and checks it all.
pub fn load(path: Option<&Path>, layers: &[Overrides]) -> Result<AgentConfig, ConfigError> {
    let (file, file_origin) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
            (file, format!("config file {}", path.display()))
        }
        None => (FileConfig::default(), "defaults".to_owned()),
    };
    let mut builder = Builder {
        file,
        file_origin,
        origins: HashMap::new(),
        secrets: HashMap::new(),
    };
    for layer in layers {
        for (key, value, origin) in &layer.0 {
            builder.apply(key, value, origin)?;
        }
    }
    builder.build()
}

struct Builder {
    file: FileConfig,
    file_origin: String,
    /// Which layer set each overridden key.
    origins: HashMap<&'static str, String>,
    /// Secrets given directly (environment only).
    secrets: HashMap<&'static str, Secret>,
}

impl Builder {
    fn origin(&self, key: &str) -> String {
        self.origins
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.file_origin.clone())
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            origin: self.origin(key),
            reason: reason.into(),
        }
    }

    fn apply(&mut self, key: &'static str, value: &str, origin: &str) -> Result<(), ConfigError> {
        self.origins.insert(key, origin.to_owned());
        let text = Some(value.to_owned());
        let path = Some(PathBuf::from(value));
        match key {
            "server.url" => server(&mut self.file).url = text,
            "server.protocol" => server(&mut self.file).protocol = text,
            "server.tenant" => server(&mut self.file).tenant = text,
            "server.basic_auth_user" => server(&mut self.file).basic_auth_user = text,
            "server.basic_auth_password_file" => {
                server(&mut self.file).basic_auth_password_file = path
            }
            "server.bearer_token_file" => server(&mut self.file).bearer_token_file = path,
            "server.ca_file" => server(&mut self.file).ca_file = path,
            "server.basic_auth_password" | "server.bearer_token" => {
                self.secrets.insert(key, Secret(value.trim().to_owned()));
            }
            "profiling.window" => self.file.profiling.window = text,
            "profiling.unwind" => self.file.profiling.unwind = text,
            "profiling.frequency" => {
                let hz = value
                    .parse()
                    .map_err(|_| self.invalid(key, format!("`{value}` is not a whole number")))?;
                self.file.profiling.frequency = Some(hz);
            }
            "profiling.off_cpu" => {
                let on = parse_bool(value)
                    .ok_or_else(|| self.invalid(key, format!("`{value}` is not true or false")))?;
                self.file.profiling.off_cpu = Some(on);
            }
            "profiling.cuda" => {
                let on = parse_bool(value)
                    .ok_or_else(|| self.invalid(key, format!("`{value}` is not true or false")))?;
                self.file.profiling.cuda = Some(on);
            }
            "output.directory" => self.file.output.directory = path,
            "spool.directory" => self.file.spool.directory = path,
            "metrics.address" => self.file.metrics.address = text,
            "log.format" => self.file.log.format = text,
            "labels" => {
                let (name, label) = value
                    .split_once('=')
                    .ok_or_else(|| self.invalid(key, format!("`{value}` is not NAME=VALUE")))?;
                self.file
                    .labels
                    .insert(name.trim().to_owned(), label.trim().to_owned());
            }
            _ => return Err(self.invalid(key, "not a setting smolder knows")),
        }
        Ok(())
    }

    fn build(self) -> Result<AgentConfig, ConfigError> {
        let profiling = &self.file.profiling;
        let window = match &profiling.window {
            Some(text) => {
                let window =
                    parse_duration(text).map_err(|e| self.invalid("profiling.window", e))?;
                if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
                    return Err(self.invalid("profiling.window", "use 1s to 1h"));
                }
                window
            }
            None => DEFAULT_WINDOW,
        };
        let frequency = profiling.frequency.unwrap_or(DEFAULT_FREQUENCY);
        let frequency = NonZeroU32::new(frequency)
            .filter(|hz| hz.get() <= 1000)
            .ok_or_else(|| self.invalid("profiling.frequency", "use 1 to 1000 Hz"))?;
        let off_cpu = match profiling.off_cpu {
            Some(true) => Some(self.off_cpu()?),
            _ => None,
        };
        let cuda = match profiling.cuda {
            Some(true) => Some(self.cuda()?),
            _ => None,
        };
        let unwind = self.unwind()?;
        let labels = self.labels()?;
        let services = self
            .file
            .services
            .iter()
            .enumerate()
            .map(|(i, rule)| self.service_rule(i, rule))
            .collect::<Result<Vec<_>, _>>()?;
        let include = self.matchers("processes.include", &self.file.processes.include)?;
        let exclude = self.matchers("processes.exclude", &self.file.processes.exclude)?;
        let max_thread_names = profiling
            .max_thread_names
            .unwrap_or(DEFAULT_MAX_THREAD_NAMES);
        let go_labels = profiling.go_labels.clone().unwrap_or_default();
        if let Some(bad) = go_labels.iter().find(|k| !valid_label_name(k)) {
            return Err(self.invalid(
                "profiling.go_labels",
                format!("`{bad}`: label names are letters, digits and _, not starting with a digit or __"),
            ));
        }
        let max_go_label_sets = profiling
            .max_go_label_sets
            .unwrap_or(DEFAULT_MAX_GO_LABEL_SETS);
        let metrics_address = self
            .file
            .metrics
            .address
            .as_deref()
            .map(|text| {
                parse_listen_address(text).ok_or_else(|| {
                    self.invalid(
                        "metrics.address",
                        format!("`{text}` is not IP:PORT or a port number"),
                    )
                })
            })
            .transpose()?;
        let log_format = match self.file.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(self.invalid("log.format", format!("`{other}`: use text or json")))
            }
        };
        let sink = self.sink()?;
        Ok(AgentConfig {
            window,
            frequency,
            off_cpu,
            cuda,
            unwind,
            sink,
            labels,
            services,
            include,
            exclude,
            max_thread_names,
            go_labels,
            max_go_label_sets,
            metrics_address,
            log_format,
        })
    }

    fn off_cpu(&self) -> Result<OffCpuConfig, ConfigError> {
        let profiling = &self.file.profiling;
        let mut config = OffCpuConfig {
            // An always-on default: blocks under 1 ms are rarely what hurts.
            min_block: Duration::from_millis(1),
            ..OffCpuConfig::default()
        };
        if let Some(text) = &profiling.off_cpu_min {
            config.min_block =
                parse_duration(text).map_err(|e| self.invalid("profiling.off_cpu_min", e))?;
        }
        if let Some(n) = profiling.off_cpu_sample_every {
            config.sample_every = NonZeroU32::new(n).ok_or_else(|| {
                self.invalid("profiling.off_cpu_sample_every", "must be 1 or more")
            })?;
        }
        Ok(config)
    }

    fn cuda(&self) -> Result<AgentCudaConfig, ConfigError> {
        let profiling = &self.file.profiling;
        let percent = profiling
            .cuda_max_overhead_percent
            .unwrap_or(DEFAULT_CUDA_MAX_OVERHEAD_PERCENT);
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(self.invalid(
                "profiling.cuda_max_overhead_percent",
                format!("{percent}: use more than 0 and at most 100"),
            ));
        }
        Ok(AgentCudaConfig {
            stacks_per_second: profiling
                .cuda_stacks_per_second
                .unwrap_or(DEFAULT_CUDA_STACKS_PER_SECOND),
            max_overhead: percent / 100.0,
        })
    }

    fn unwind(&self) -> Result<UnwindConfig, ConfigError> {
        let profiling = &self.file.profiling;
        let mut config = UnwindConfig::default();
        match profiling.unwind.as_deref() {
            None | Some("dwarf") => {}
            Some("fp") => config.mode = UnwindMode::FramePointers,
            Some(other) => {
                return Err(self.invalid("profiling.unwind", format!("`{other}`: use dwarf or fp")))
            }
        }
        if let Some(mib) = profiling.unwind_table_mib {
            if !(1..=4096).contains(&mib) {
                return Err(self.invalid("profiling.unwind_table_mib", "use 1 to 4096"));
            }
            config.table_bytes = u64::from(mib) << 20;
        }
        Ok(config)
    }

    fn labels(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut labels = BTreeMap::new();
        labels.insert("host_name".to_owned(), host_name());
        for (name, value) in &self.file.labels {
            if !valid_label_name(name) {
                return Err(self.invalid(
                    &format!("labels.{name}"),
                    "label names are letters, digits and _, not starting with a digit or __",
                ));
            }
            if matches!(name.as_str(), "service_name") {
                return Err(self.invalid(
                    &format!("labels.{name}"),
                    "service_name is inferred per process; use [[service]] rules",
                ));
            }
            labels.insert(name.clone(), value.clone());
        }
        Ok(labels)
    }

    fn regex(&self, key: &str, pattern: &Option<String>) -> Result<Option<Regex>, ConfigError> {
        pattern
            .as_deref()
            .map(|p| Regex::new(p).map_err(|e| self.invalid(key, e.to_string())))
            .transpose()
    }

    fn matcher(&self, key: &str, m: &MatchSection) -> Result<Matcher, ConfigError> {
        let matcher = Matcher {
            exe: self.regex(&format!("{key}.exe"), &m.exe)?,
            comm: self.regex(&format!("{key}.comm"), &m.comm)?,
            cmdline: self.regex(&format!("{key}.cmdline"), &m.cmdline)?,
            cgroup: self.regex(&format!("{key}.cgroup"), &m.cgroup)?,
            container: self.regex(&format!("{key}.container"), &m.container)?,
            service: self.regex(&format!("{key}.service"), &m.service)?,
        };
        if matcher.is_empty() {
            return Err(self.invalid(
                key,
                "give at least one of exe, comm, cmdline, cgroup, container, service",
            ));
        }
        Ok(matcher)
    }

    fn matchers(&self, key: &str, list: &[MatchSection]) -> Result<Vec<Matcher>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, m)| self.matcher(&format!("{key}[{i}]"), m))
            .collect()
    }

    fn service_rule(
        &self,
        index: usize,
        rule: &super::file::ServiceRuleSection,
    ) -> Result<ServiceRule, ConfigError> {
        let key = format!("service[{index}]");
        let name = rule
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| self.invalid(&format!("{key}.name"), "missing"))?;
        let section = MatchSection {
            exe: rule.exe.clone(),
            comm: rule.comm.clone(),
            cmdline: rule.cmdline.clone(),
            cgroup: rule.cgroup.clone(),
            container: rule.container.clone(),
            service: None,
        };
        let labels = [
            ("service_repository", &rule.repository),
            ("service_git_ref", &rule.git_ref),
            ("service_root_path", &rule.root_path),
        ]
        .into_iter()
        .filter_map(|(label, value)| Some((label, value.clone()?)))
        .collect();
        Ok(ServiceRule {
            name,
            matcher: self.matcher(&key, &section)?,
            labels,
        })
    }

    fn size(&self, key: &str, text: &Option<String>, default: u64) -> Result<u64, ConfigError> {
        match text {
            Some(text) => parse_size(text).filter(|&n| n >= 1 << 20).ok_or_else(|| {
                self.invalid(
                    key,
                    format!("`{text}`: use a size of 1MiB or more, such as 512MiB or 2GiB"),
                )
            }),
            None => Ok(default),
        }
    }

    fn sink(&self) -> Result<Sink, ConfigError> {
        let Some(server) = self.file.server.as_ref().filter(|s| s.url.is_some()) else {
            if self.file.server.is_some() {
                return Err(
                    self.invalid("server.url", "missing (the [server] section needs a url)")
                );
            }
            return Ok(Sink::Directory(BoundedDir {
                path: self
                    .file
                    .output
                    .directory
                    .clone()
                    .unwrap_or_else(|| DEFAULT_OUTPUT_DIR.into()),
                max_bytes: self.size(
                    "output.max_size",
                    &self.file.output.max_size,
                    DEFAULT_OUTPUT_MAX,
                )?,
            }));
        };
        let spool = BoundedDir {
            path: self
                .file
                .spool
                .directory
                .clone()
                .unwrap_or_else(|| DEFAULT_SPOOL_DIR.into()),
            max_bytes: self.size(
                "spool.max_size",
                &self.file.spool.max_size,
                DEFAULT_SPOOL_MAX,
            )?,
        };
        Ok(Sink::Server {
            server: Box::new(self.server(server)?),
            spool,
        })
    }

    fn server(&self, section: &ServerSection) -> Result<ServerConfig, ConfigError> {
        let text = section.url.as_deref().unwrap_or_default();
        let url = reqwest::Url::parse(text)
            .map_err(|e| self.invalid("server.url", format!("`{text}` is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) || section.insecure_http == Some(true) => {}
            "http" => {
                return Err(self.invalid(
                    "server.url",
                    "plain http to a remote host sends profiles and credentials in clear text; use https, or set server.insecure_http = true",
                ))
            }
            other => {
                return Err(self.invalid("server.url", format!("scheme `{other}`: use https or http")))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.invalid(
                "server.url",
                "credentials in the URL would be logged; use basic_auth_user and basic_auth_password_file",
            ));
        }
        let read_secret = |key: &str, path: &PathBuf| -> Result<Secret, ConfigError> {
            std::fs::read_to_string(path)
                .map(|s| Secret(s.trim().to_owned()))
                .map_err(|source| ConfigError::Unreadable {
                    key: key.to_owned(),
                    origin: self.origin(key),
                    path: path.clone(),
                    source,
                })
        };
        let password = match (
            &section.basic_auth_password_file,
            self.secrets.get("server.basic_auth_password"),
        ) {
            (_, Some(secret)) => Some(secret.clone()),
            (Some(path), None) => Some(read_secret("server.basic_auth_password_file", path)?),
            (None, None) => None,
        };
        let token = match (
            &section.bearer_token_file,
            self.secrets.get("server.bearer_token"),
        ) {
            (_, Some(secret)) => Some(secret.clone()),
            (Some(path), None) => Some(read_secret("server.bearer_token_file", path)?),
            (None, None) => None,
        };
        let auth = match (&section.basic_auth_user, password, token) {
            (Some(_), _, Some(_)) => {
                return Err(self.invalid(
                    "server.bearer_token_file",
                    "give basic auth or a bearer token, not both",
                ))
            }
            (Some(user), Some(password), None) => Auth::Basic {
                user: user.clone(),
                password,
            },
            (Some(_), None, None) => {
                return Err(self.invalid(
                    "server.basic_auth_password_file",
                    "missing (basic_auth_user needs a password)",
                ))
            }
            (None, Some(_), _) => {
                return Err(self.invalid(
                    "server.basic_auth_user",
                    "missing (a basic auth password needs a user)",
                ))
            }
            (None, None, Some(token)) => Auth::Bearer(token),
            (None, None, None) => Auth::None,
        };
        let ca_pem = section
            .ca_file
            .as_ref()
            .map(|path| {
                let pem = std::fs::read(path).map_err(|source| ConfigError::Unreadable {
                    key: "server.ca_file".into(),
                    origin: self.origin("server.ca_file"),
                    path: path.clone(),
                    source,
                })?;
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    self.invalid(
                        "server.ca_file",
                        format!("{}: not PEM certificates: {e}", path.display()),
                    )
                })?;
                Ok(pem)
            })
            .transpose()?;
        let protocol = match section.protocol.as_deref() {
            None | Some("pyroscope") => Protocol::Pyroscope,
            Some("otlp") => Protocol::Otlp,
            Some(other) => {
                return Err(self.invalid(
                    "server.protocol",
                    format!("`{other}`: use pyroscope (its push API) or otlp (OTLP/HTTP profiles)"),
                ))
            }
        };
        let timeout = match &section.timeout {
            Some(text) => parse_duration(text).map_err(|e| self.invalid("server.timeout", e))?,
            None => Duration::from_secs(10),
        };
        Ok(ServerConfig {
            url,
            protocol,
            tenant: section.tenant.clone().filter(|t| !t.is_empty()),
            auth,
            ca_pem,
            timeout,
        })
    }
}

fn server(file: &mut FileConfig) -> &mut ServerSection {
    file.server.get_or_insert_with(ServerSection::default)
}

impl Matcher {
    fn is_empty(&self) -> bool {
        self.exe.is_none()
            && self.comm.is_none()
            && self.cmdline.is_none()
            && self.cgroup.is_none()
            && self.container.is_none()
            && self.service.is_none()
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `512MiB`, `2GiB`, `100MB`, or plain bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// `IP:PORT`, or a bare port on loopback.
fn parse_listen_address(text: &str) -> Option<SocketAddr> {
    if let Ok(port) = text.trim().parse::<u16>() {
        return Some(SocketAddr::new(DEFAULT_METRICS_PORT_HOST, port));
    }
    text.trim().parse().ok()
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// This machine's name, as `uname -n` prints it.
pub fn host_name() -> String {
    // SAFETY: uname fills a zeroed plain-data struct.
    let name = unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return "unknown".into();
        }
        uts.nodename
    };
    let bytes: Vec<u8> = name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The summary `smolder agent --check` prints: what will happen, no secrets.
impl fmt::Display for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration OK")?;
        match &self.sink {
            Sink::Server { server, spool } => {
                let auth = match server.auth {
                    Auth::None => "none",
                    Auth::Basic { .. } => "basic",
                    Auth::Bearer(_) => "bearer token",
                };
                writeln!(
                    f,
                    "  push to:    {} ({}, tenant {}, auth {auth}{}, timeout {:?})",
                    server.url,
                    match server.protocol {
                        Protocol::Pyroscope => "Pyroscope push API".to_owned(),
                        Protocol::Otlp => format!(
                            "OTLP/HTTP profiles {} at /{}",
                            crate::export::otlp_proto::PROTO_VERSION,
                            server.protocol.path()
                        ),
                    },
                    server.tenant.as_deref().unwrap_or("-"),
                    if server.ca_pem.is_some() {
                        ", custom CA"
                    } else {
                        ""
                    },
                    server.timeout
                )?;
                writeln!(
                    f,
                    "  spool:      {} (max {} MiB)",
                    spool.path.display(),
                    spool.max_bytes >> 20
                )?;
            }
            Sink::Directory(dir) => {
                writeln!(
                    f,
                    "  write to:   {} (max {} MiB)",
                    dir.path.display(),
                    dir.max_bytes >> 20
                )?;
            }
        }
        writeln!(
            f,
            "  profiling:  {:?} windows at {} Hz, off-CPU {}",
            self.window,
            self.frequency,
            match &self.off_cpu {
                Some(o) => format!(
                    "on (blocks of {:?} or more, 1 in {})",
                    o.min_block, o.sample_every
                ),
                None => "off".to_owned(),
            }
        )?;
        writeln!(
            f,
            "  CUDA:       {}",
            match &self.cuda {
                Some(c) => format!(
                    "on ({} stacks/s per process, launch probes within {}% of a core)",
                    c.stacks_per_second,
                    c.max_overhead * 100.0
                ),
                None => "off".to_owned(),
            }
        )?;
        writeln!(
            f,
            "  unwinding:  {}",
            match self.unwind.mode {
                UnwindMode::Dwarf => format!(
                    "DWARF tables ({} MiB), frame pointers where there are none",
                    self.unwind.table_bytes >> 20
                ),
                UnwindMode::FramePointers => "frame pointers only".to_owned(),
            }
        )?;
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(f, "  labels:     {}", labels.join(", "))?;
        let rules: Vec<&str> = self.services.iter().map(|r| r.name.as_str()).collect();
        writeln!(
            f,
            "  services:   {} rules {:?}, then inference",
            rules.len(),
            rules
        )?;
        writeln!(
            f,
            "  processes:  {} include, {} exclude rules",
            self.include.len(),
            self.exclude.len()
        )?;
        match self.metrics_address {
            Some(address) => writeln!(f, "  metrics:    http://{address}/metrics")?,
            None => writeln!(f, "  metrics:    off")?,
        }
        write!(f, "  log format: {:?}", self.log_format)
    }
}

#[cfg(test)]
mod tests;
