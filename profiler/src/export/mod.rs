//! Export stage: where encoded profiles go. A bounded local directory, a
//! bounded on-disk spool, and the Pyroscope push client.

pub mod bounded_dir;
pub mod directory;
pub mod push_proto;
pub mod pyroscope;
