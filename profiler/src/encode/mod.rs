//! Encode stage: writes a [`crate::profile::Profile`] as pprof, collapsed
//! stacks or an SVG flame graph.

mod collapsed;
mod flamegraph;
mod pprof;
pub mod proto;

pub use collapsed::collapsed_lines;
pub use flamegraph::write_svg;
pub use pprof::{encode_pprof, encode_pprof_labelled, write_pprof, SampleLabels};
pub use proto as pprof_proto;

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("writing the profile")]
    Io(#[from] io::Error),
    #[error("rendering the flame graph")]
    FlameGraph(#[source] io::Error),
}
