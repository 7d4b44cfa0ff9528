//! CPython: where a process's interpreter keeps its threads and frames
//! ([`detect`]), and what a sampled frame was running ([`PythonResolver`]):
//! the code object's qualified name, file and line.
//!
//! Everything is read from the live process through `/proc/PID/mem` and is
//! untrusted: a pointer may be stale, a length absurd, a string not a string.
//! Reads are bounded and checked; what cannot be read is reported, never
//! guessed.

pub(crate) mod code;
mod detect;
mod eval_code;
mod layout;
mod linetable;
mod resolver;
mod threads;
mod version;

pub use detect::{detect, DetectError, PythonProcess};
pub use layout::{FrameKind, GilLocation, Layout, LineFormat, GIL_STATE_SIZE};
pub use linetable::line_for_offset;
pub use resolver::{PythonFrame, PythonResolver, PythonStats, RawPythonFrame};
pub use threads::{ThreadNameReader, ThreadNamesError};
pub use version::PythonVersion;
