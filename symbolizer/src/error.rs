//! Errors of the symbolizer. An address without a name is not one of them
//! (see [`crate::Resolution::Unknown`]).

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} does not exist (it may have exited)")]
    NoSuchProcess { pid: u32 },
    #[error("{path} lists no kernel addresses: run as root or set kernel.kptr_restrict=0")]
    KernelAddressesHidden { path: PathBuf },
    #[error("kernel symbol source {source_name} failed")]
    KernelSource {
        source_name: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }
}
