//! Python stacks: registers each CPython process with the BPF walker
//! (`python_processes`), names the frames it samples, and puts them in place
//! of the interpreter's own frames in the native stack.

mod layout;
mod merge;
mod store;
mod tracker;

pub use layout::ProcessEntry;
pub use merge::{merge, Merged, NativeFrameKind};
pub use store::{BpfPythonStore, PythonStore};
pub use tracker::{Interpreter, PythonTracker, TrackerStats};
