//! Export stage: where encoded profiles go. A bounded local directory, a
//! bounded on-disk spool, and the HTTP client that sends them to Pyroscope
//! (its push API) or to an OTLP profiles endpoint.

pub mod bounded_dir;
pub mod directory;
pub mod otlp;
pub mod otlp_proto;
pub mod push_client;
pub mod push_proto;
pub mod pyroscope;

/// 16 random bytes for a profile id, from the kernel's pool (the time where
/// it cannot be read: the id only needs to be unique enough).
fn random_id() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most len bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_le_bytes();
    }
    bytes
}
