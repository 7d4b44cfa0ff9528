//! The OpenTelemetry process context (OTEP 4719): the resource an SDK
//! publishes in its own memory for readers outside the process, in a
//! mapping named `OTEL_CTX` (a memfd, or an anonymous mapping named with
//! `PR_SET_VMA_ANON_NAME`). What the SDK resolved (its service name,
//! version, environment, instance id) ranks above what the environment
//! variables say.
//!
//! Header (32 bytes): `"OTEL_CTX"`, version (u32, 2), payload size (u32),
//! published-at (u64 ns, 0 while an update is written), payload address
//! (u64). The payload is a protobuf `ProcessContext` (`resource` = 1,
//! `extra_attributes` = 2; what dd-trace-go 2.12 publishes), or a bare
//! `Resource` (the OTEP's first text). Both are read as hostile input: the
//! payload is bounded, a header that changes while it is read is read again
//! (a few times), anything malformed is no context.

use std::io::Read;
use std::path::Path;

use prost::Message;
use symbolizer::{parse_maps, MapPath, ProcessMemory};

use super::otel_resource::{self, OtelResource};
use crate::export::otlp_proto::KeyValue;

const SIGNATURE: &[u8; 8] = b"OTEL_CTX";
const VERSION: u32 = 2;
const HEADER_SIZE: usize = 32;
/// Larger payloads are refused (a resource is a few hundred bytes).
const MAX_PAYLOAD: u32 = 64 << 10;
/// `/proc/PID/maps` past this many bytes is not searched.
const MAX_MAPS: u64 = 8 << 20;
/// Reads of a context being updated meanwhile before giving up.
const ATTEMPTS: usize = 3;

/// Names the mapping shows under in `/proc/PID/maps`.
const MAPPING_NAMES: [&str; 3] = [
    "/memfd:OTEL_CTX",
    "[anon_shmem:OTEL_CTX]",
    "[anon:OTEL_CTX]",
];

#[derive(Clone, PartialEq, prost::Message)]
struct ProcessContext {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    extra_attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    #[error("the process's memory cannot be read")]
    Unreadable,
    #[error("no OTEL_CTX signature or an unknown version")]
    NotAContext,
    #[error("a payload of {0} bytes (at most {MAX_PAYLOAD})")]
    TooLarge(u32),
    #[error("the context kept changing while it was read")]
    Unstable,
    #[error("the payload is not a process context or a resource")]
    Payload,
}

/// The process context of `pid` (its `/proc` directory `dir`), if it
/// publishes one.
pub fn read(dir: &Path, pid: u32) -> Option<OtelResource> {
    let address = find_mapping(&read_maps(dir)?)?;
    let memory = ProcessMemory::open(pid).ok()?;
    read_at(|at, buf| memory.read(at, buf).is_ok(), address)
        .map_err(|e| tracing::debug!("pid {pid}: OTEL_CTX not read: {e}"))
        .ok()
}

/// Whether `pid` shows a process context mapping (cheaper than [`read`]).
pub fn published(proc_root: &Path, pid: u32) -> bool {
    read_maps(&proc_root.join(pid.to_string())).is_some_and(|maps| find_mapping(&maps).is_some())
}

/// The maps file, bytes that are not UTF-8 replaced (a path may hold any).
fn read_maps(dir: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(dir.join("maps"))
        .ok()?
        .take(MAX_MAPS)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The start address of the context's mapping.
pub fn find_mapping(maps: &str) -> Option<u64> {
    parse_maps(maps).0.into_iter().find_map(|entry| {
        let name = match &entry.path {
            MapPath::File { path, .. } => path.to_str()?.to_owned(),
            MapPath::Pseudo(name) => name.clone(),
            MapPath::Anonymous => return None,
        };
        MAPPING_NAMES
            .iter()
            .any(|n| name.starts_with(n))
            .then_some(entry.start)
    })
}

struct Header {
    payload_size: u32,
    published_at: u64,
    payload: u64,
}

fn header(read: &impl Fn(u64, &mut [u8]) -> bool, address: u64) -> Result<Header, ContextError> {
    let mut raw = [0u8; HEADER_SIZE];
    if !read(address, &mut raw) {
        return Err(ContextError::Unreadable);
    }
    let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().unwrap_or_default());
    if &raw[..8] != SIGNATURE || u32_at(8) != VERSION {
        return Err(ContextError::NotAContext);
    }
    Ok(Header {
        payload_size: u32_at(12),
        published_at: u64_at(16),
        payload: u64_at(24),
    })
}

/// Reads the context at `address` with `read` (address, buffer -> whether
/// all of it was read): header, payload, header again, as the OTEP says.
pub fn read_at(
    read: impl Fn(u64, &mut [u8]) -> bool,
    address: u64,
) -> Result<OtelResource, ContextError> {
    for _ in 0..ATTEMPTS {
        let first = header(&read, address)?;
        if first.published_at == 0 {
            continue; // being updated
        }
        if first.payload_size > MAX_PAYLOAD {
            return Err(ContextError::TooLarge(first.payload_size));
        }
        let mut payload = vec![0u8; first.payload_size as usize];
        if !read(first.payload, &mut payload) {
            return Err(ContextError::Unreadable);
        }
        if header(&read, address)?.published_at != first.published_at {
            continue;
        }
        return decode(&payload);
    }
    Err(ContextError::Unstable)
}

fn decode(payload: &[u8]) -> Result<OtelResource, ContextError> {
    let attributes = ProcessContext::decode(payload)
        .ok()
        .and_then(|c| c.resource)
        .map(|r| r.attributes)
        .filter(|a| !a.is_empty())
        .or_else(|| Resource::decode(payload).ok().map(|r| r.attributes))
        .ok_or(ContextError::Payload)?;
    Ok(otel_resource::from_attributes(
        attributes
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.as_ref()?.as_str()?.to_owned()))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp_proto::AnyValue;
    use std::cell::Cell;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue::string(value)),
        }
    }

    /// A mapping at 0x1000 holding the header and `payload` after it.
    fn mapping(published_at: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend(VERSION.to_le_bytes());
        bytes.extend((payload.len() as u32).to_le_bytes());
        bytes.extend(published_at.to_le_bytes());
        bytes.extend((0x1000u64 + HEADER_SIZE as u64).to_le_bytes());
        bytes.extend(payload);
        bytes
    }

    fn reader(memory: &[u8]) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        move |at, buf| {
            let Some(start) = at.checked_sub(0x1000).map(|s| s as usize) else {
                return false;
            };
            match memory.get(start..start + buf.len()) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
    }

    fn context() -> Vec<u8> {
        ProcessContext {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.version", "3.1.4"),
                    kv("deployment.environment.name", "staging"),
                    kv("service.instance.id", "f00d"),
                ],
            }),
            extra_attributes: vec![kv("datadog.process_tags", "a:b")],
        }
        .encode_to_vec()
    }

    #[test]
    fn finds_the_mapping_by_any_of_its_names() {
        let maps = "7f00-7f10 r--p 00000000 00:00 0 [heap]\n\
                    7f2a00001000-7f2a00003000 rw-p 00000000 00:01 1234 /memfd:OTEL_CTX (deleted)\n";
        assert_eq!(find_mapping(maps), Some(0x7f2a_0000_1000));
        assert_eq!(
            find_mapping("1000-2000 rw-p 00000000 00:00 0 [anon:OTEL_CTX]\n"),
            Some(0x1000)
        );
        assert_eq!(
            find_mapping("1000-2000 rw-p 00000000 00:00 0 /tmp/OTEL_CTX\n"),
            None
        );
        assert_eq!(
            find_mapping("zz-2000 rw-p 00000000 00:00 0 [anon:OTEL_CTX]\n"),
            None
        );
    }

    #[test]
    fn reads_a_process_context_and_a_bare_resource() {
        let memory = mapping(77, &context());
        let r = read_at(reader(&memory), 0x1000).unwrap();
        assert_eq!(r.service_name.as_deref(), Some("checkout"));
        assert_eq!(
            r.labels,
            vec![
                ("deployment_environment", "staging".to_owned()),
                ("service_version", "3.1.4".to_owned())
            ]
        );
        let bare = Resource {
            attributes: vec![kv("service.name", "bare")],
        }
        .encode_to_vec();
        let memory = mapping(77, &bare);
        let r = read_at(reader(&memory), 0x1000).unwrap();
        assert_eq!(r.service_name.as_deref(), Some("bare"));
    }

    #[test]
    fn refuses_what_is_not_a_finished_context() {
        let mut memory = mapping(77, &context());
        memory[0] = b'X';
        assert_eq!(
            read_at(reader(&memory), 0x1000),
            Err(ContextError::NotAContext)
        );
        let memory = mapping(0, &context());
        assert_eq!(
            read_at(reader(&memory), 0x1000),
            Err(ContextError::Unstable)
        );
        let mut memory = mapping(77, &context());
        memory[12..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert_eq!(
            read_at(reader(&memory), 0x1000),
            Err(ContextError::TooLarge(MAX_PAYLOAD + 1))
        );
        let mut memory = mapping(77, &context());
        memory.truncate(memory.len() - 1);
        assert_eq!(
            read_at(reader(&memory), 0x1000),
            Err(ContextError::Unreadable)
        );
        let memory = mapping(77, b"\xff\xff\xff");
        assert_eq!(read_at(reader(&memory), 0x1000), Err(ContextError::Payload));
    }

    #[test]
    fn a_context_updated_while_read_is_read_again() {
        let first = mapping(77, &context());
        let second = mapping(78, &context());
        let reads = Cell::new(0);
        let changing = |at: u64, buf: &mut [u8]| {
            reads.set(reads.get() + 1);
            // The first header says 77, every later one 78.
            let memory = if reads.get() == 1 { &first } else { &second };
            reader(memory)(at, buf)
        };
        let r = read_at(changing, 0x1000).unwrap();
        assert_eq!(r.service_name.as_deref(), Some("checkout"));
        assert_eq!(reads.get(), 6, "read twice over: header, payload, header");
    }
}
