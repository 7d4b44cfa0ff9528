//! `smolder agent`: continuous profiling in windows, one profile per
//! service and window, pushed to Grafana Pyroscope or written to a local
//! directory. See docs/agent.md.

mod collector;
pub mod config;
mod cuda_budget;
mod delivery;
mod file;
mod go_labels;
mod metrics;
pub(crate) mod otel_resource;
pub(crate) mod process_context;
pub(crate) mod process_info;
mod run;
mod service_cache;
mod services;

pub use config::{env_overrides, load, AgentConfig, ConfigError, Overrides, Sink};
pub use run::{run, AgentError};

/// The service a process is named for without rules (the fuzz targets).
#[cfg(any(fuzzing, test))]
pub(crate) fn infer_service(info: &process_info::ProcessInfo) -> services::Service {
    services::infer(info, &[])
}
