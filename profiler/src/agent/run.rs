//! Starts the agent's parts and waits for them: the BPF sampler and the
//! collector on a thread of their own, delivery and the metrics listener
//! on a single-threaded tokio runtime.

use std::sync::Arc;

use symbolizer::{Symbolizer, SymbolizerConfig};
use tokio::sync::mpsc;

use super::collector::{Collector, WindowBatch};
use super::config::{AgentConfig, Auth, Sink};
use super::delivery::{self, Pusher};
use super::metrics::{self, Metrics};
use crate::collect::{
    BpfKernelSymbols, CudaConfig, LoadError, Sampler, SamplerConfig, SamplerTargets, UnwindMode,
};
use crate::debuginfod::{Debuginfod, DebuginfodConfig};
use crate::export::bounded_dir::DirError;
use crate::export::directory::ProfileDir;
use crate::export::push_client::{ClientConfig, ClientError, Protocol, PushClient};
use crate::preflight::{self, PreflightError};
use crate::signals;

/// Windows waiting for delivery; beyond this the collector drops windows
/// rather than wait.
const QUEUE_WINDOWS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("cannot start the BPF sampler")]
    Load(#[from] LoadError),
    #[error("output directory")]
    Directory(#[source] DirError),
    #[error("spool directory")]
    Spool(#[source] DirError),
    #[error("Pyroscope client")]
    Client(#[from] ClientError),
    #[error("cannot listen for metrics on {address}")]
    Metrics {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the collector thread failed")]
    Collector,
}

pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    preflight::check_system(config.unwind.mode == UnwindMode::Dwarf)?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    // Sinks and the listener first: a bad directory or port fails before BPF loads.
    let sink = open_sink(&config, &metrics)?;
    let listener = match config.metrics_address {
        Some(address) => Some(
            runtime
                .block_on(metrics::bind(address))
                .map_err(|source| AgentError::Metrics { address, source })?,
        ),
        None => None,
    };
    signals::install();
    let (tx, rx) = mpsc::channel::<WindowBatch>(QUEUE_WINDOWS);
    // The symbolizer is not Send: the sampler side is built on its own thread,
    // which reports whether it started.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let collector = {
        let config = config.clone();
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name("smolder-collect".into())
            .spawn(move || {
                let collector = load_sampler(&config).and_then(|sampler| {
                    let mut collector = Collector::new(sampler, symbolizer(), config, metrics);
                    collector.start()?;
                    Ok(collector)
                });
                match collector {
                    Ok(collector) => {
                        let _ = started_tx.send(Ok(()));
                        collector.run(tx);
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            })
            .map_err(AgentError::Runtime)?
    };
    match started_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(AgentError::Collector),
    }
    tracing::info!(
        window_s = config.window.as_secs_f64(),
        frequency_hz = config.frequency.get(),
        off_cpu = config.off_cpu.is_some(),
        sink = %sink.describe(),
        "smolder agent started"
    );

    runtime.block_on(async {
        if let Some(listener) = listener {
            if let Ok(address) = listener.local_addr() {
                tracing::info!("metrics on http://{address}/metrics");
            }
            tokio::spawn(metrics::serve(listener, metrics.clone()));
        }
        match sink {
            OpenSink::Directory(dir) => delivery::to_directory(rx, dir, metrics.clone()).await,
            OpenSink::Push(pusher) => pusher.run(rx).await,
        }
    });
    collector.join().map_err(|_| AgentError::Collector)?;
    tracing::info!("smolder agent stopped");
    Ok(())
}

enum OpenSink {
    Directory(ProfileDir),
    Push(Box<Pusher>),
}

impl OpenSink {
    fn describe(&self) -> String {
        match self {
            OpenSink::Directory(dir) => format!("directory {}", dir.path().display()),
            OpenSink::Push(pusher) => match pusher.protocol() {
                Protocol::Pyroscope => "Pyroscope".to_owned(),
                Protocol::Otlp => "OTLP".to_owned(),
            },
        }
    }
}

fn open_sink(config: &AgentConfig, metrics: &Arc<Metrics>) -> Result<OpenSink, AgentError> {
    match &config.sink {
        Sink::Directory(dir) => Ok(OpenSink::Directory(
            ProfileDir::open(&dir.path, dir.max_bytes).map_err(AgentError::Directory)?,
        )),
        Sink::Server { server, spool } => {
            let (basic_auth, bearer_token) = match &server.auth {
                Auth::None => (None, None),
                Auth::Basic { user, password } => {
                    (Some((user.clone(), password.expose().to_owned())), None)
                }
                Auth::Bearer(token) => (None, Some(token.expose().to_owned())),
            };
            let client = PushClient::new(&ClientConfig {
                base_url: server.url.clone(),
                protocol: server.protocol,
                tenant: server.tenant.clone(),
                basic_auth,
                bearer_token,
                ca_pem: server.ca_pem.clone(),
                timeout: server.timeout,
            })?;
            let spool = delivery::open_spool(&spool.path, spool.max_bytes, server.protocol)
                .map_err(AgentError::Spool)?;
            tracing::info!(
                "pushing to {} (spool {})",
                server.url,
                spool.path().display()
            );
            Ok(OpenSink::Push(Box::new(Pusher::new(
                client,
                server.protocol,
                Some(spool),
                config.labels.clone(),
                metrics.clone(),
            ))))
        }
    }
}

/// Loads the BPF programs; [`Collector::start`] attaches them.
fn load_sampler(config: &AgentConfig) -> Result<Sampler, AgentError> {
    let sampler = Sampler::load(
        SamplerConfig {
            on_cpu: true,
            off_cpu: config.off_cpu,
            frequency: config.frequency,
            targets: SamplerTargets::All,
            self_tgid: std::process::id(),
            unwind: config.unwind,
            cuda: config.cuda.map(|c| CudaConfig {
                stacks_per_second: c.stacks_per_second,
            }),
        },
        false,
    )?;
    Ok(sampler)
}

fn symbolizer() -> Symbolizer {
    let mut symbolizer = Symbolizer::new(SymbolizerConfig::default());
    match BpfKernelSymbols::load() {
        Ok(source) => symbolizer.set_kernel_source(Box::new(source)),
        Err(e) => tracing::info!("kernel symbols will come from /proc/kallsyms: {e:#}"),
    }
    if let Some(config) = DebuginfodConfig::from_env() {
        match Debuginfod::new(config) {
            Ok(client) => symbolizer.set_debug_info_source(Box::new(client)),
            Err(e) => tracing::warn!("debuginfod disabled: {e}"),
        }
    }
    symbolizer
}
