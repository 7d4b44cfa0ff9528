//! OTLP profiles: one window of one service, its profiles (one per kind)
//! as a single `ExportProfilesServiceRequest` with one dictionary, built
//! from the gzipped pprof the collector encoded (the mapping the
//! OpenTelemetry Collector's pprof receiver makes, so both paths carry the
//! same stacks).
//!
//! Profile types are chosen so that Pyroscope's OTLP ingestion stores the
//! series the push path stores: on-CPU as `samples/count` with period
//! `cpu/nanoseconds` (Pyroscope turns it into `process_cpu:cpu:nanoseconds`),
//! off-CPU as `offcpu/nanoseconds` with that period type
//! (`offcpu:offcpu:nanoseconds`).

use std::collections::HashMap;
use std::io::Read;

use flate2::read::GzDecoder;
use prost::Message;

use super::otlp_proto::{
    AnyValue, ExportProfilesServiceRequest, Function, InstrumentationScope, KeyValue,
    KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary, Resource,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use crate::encode::pprof_proto;
use crate::profile::ProfileKind;

/// Largest pprof a window profile may inflate to (the collector's own
/// output, or a spooled copy of it).
const MAX_PPROF: u64 = 256 << 20;

/// Pyroscope labels and the OpenTelemetry resource attribute each is sent
/// as (semantic conventions). Labels not listed keep their name.
const RESOURCE_KEYS: [(&str, &str); 8] = [
    ("service_namespace", "service.namespace"),
    ("service_version", "service.version"),
    ("deployment_environment", "deployment.environment.name"),
    ("host_name", "host.name"),
    ("container_id", "container.id"),
    ("namespace", "k8s.namespace.name"),
    ("pod", "k8s.pod.name"),
    ("container", "k8s.container.name"),
];

/// Labels Pyroscope links frames to source with: sent under their own name
/// (Pyroscope reads no `vcs.*` attribute) and as the semantic convention.
const SOURCE_KEYS: [(&str, Option<&str>); 3] = [
    ("service_repository", Some("vcs.repository.url.full")),
    ("service_git_ref", Some("vcs.ref.head.revision")),
    ("service_root_path", None),
];

/// pprof sample labels and the sample attribute each becomes; `pid` and
/// `tid` are left out (Pyroscope makes a series of every attribute, and
/// one per process would not be bounded), `trace_id`/`span_id` become the
/// sample's link.
const SAMPLE_KEYS: [(&str, Option<&str>); 4] = [
    ("pid", None),
    ("tid", None),
    ("comm", Some("process.executable.name")),
    ("thread_name", Some("thread.name")),
];

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("the window's pprof cannot be read: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("the window's pprof cannot be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the window's pprof is larger than {} MiB", MAX_PPROF >> 20)]
    TooLarge,
}

/// The resource of a service: `service.name` and its labels as attributes.
pub fn resource(service: &str, labels: &[(String, String)]) -> Vec<(String, String)> {
    let mut attributes = vec![("service.name".to_owned(), service.to_owned())];
    for (label, value) in labels {
        if let Some((_, key)) = RESOURCE_KEYS.iter().find(|(l, _)| l == label) {
            attributes.push(((*key).to_owned(), value.clone()));
        } else if let Some((_, key)) = SOURCE_KEYS.iter().find(|(l, _)| l == label) {
            attributes.push((label.clone(), value.clone()));
            if let Some(key) = key {
                attributes.push(((*key).to_owned(), value.clone()));
            }
        } else if label != "service_name" && label != "__name__" {
            attributes.push((label.clone(), value.clone()));
        }
    }
    attributes.sort();
    attributes.dedup_by(|a, b| a.0 == b.0);
    attributes
}

/// One request: the profiles of one service for one window.
pub fn encode_request(
    resource: &[(String, String)],
    profiles: &[(ProfileKind, &[u8])],
) -> Result<Vec<u8>, OtlpError> {
    let mut dictionary = Dictionary::new();
    let profiles = profiles
        .iter()
        .map(|(kind, pprof_gz)| Ok(dictionary.profile(*kind, &decode_pprof(pprof_gz)?)))
        .collect::<Result<Vec<_>, OtlpError>>()?;
    let request = ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource {
                attributes: resource
                    .iter()
                    .map(|(key, value)| KeyValue {
                        key: key.clone(),
                        value: Some(AnyValue::string(value.clone())),
                    })
                    .collect(),
            }),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "smolder".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                profiles,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(dictionary.table),
    };
    Ok(request.encode_to_vec())
}

fn decode_pprof(pprof_gz: &[u8]) -> Result<pprof_proto::Profile, OtlpError> {
    let mut bytes = Vec::new();
    GzDecoder::new(pprof_gz)
        .take(MAX_PPROF + 1)
        .read_to_end(&mut bytes)
        .map_err(OtlpError::Gzip)?;
    if bytes.len() as u64 > MAX_PPROF {
        return Err(OtlpError::TooLarge);
    }
    Ok(pprof_proto::Profile::decode(bytes.as_slice())?)
}

/// A location as interned: mapping, address, (function, line) per frame.
type LocationKey = (i32, u64, Vec<(i32, i64)>);

/// The request's dictionary, each table interned.
struct Dictionary {
    table: ProfilesDictionary,
    strings: HashMap<String, i32>,
    attributes: HashMap<(i32, String), i32>,
    functions: HashMap<(i32, i32, i32), i32>,
    mappings: HashMap<(u64, u64, u64, i32, i32), i32>,
    locations: HashMap<LocationKey, i32>,
    stacks: HashMap<Vec<i32>, i32>,
    links: HashMap<(Vec<u8>, Vec<u8>), i32>,
}

impl Dictionary {
    fn new() -> Self {
        let mut dictionary = Self {
            table: ProfilesDictionary {
                mapping_table: vec![Mapping::default()],
                location_table: vec![Location::default()],
                function_table: vec![Function::default()],
                link_table: vec![Link::default()],
                string_table: Vec::new(),
                attribute_table: vec![KeyValueAndUnit::default()],
                stack_table: vec![Stack::default()],
            },
            strings: HashMap::new(),
            attributes: HashMap::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            stacks: HashMap::new(),
            links: HashMap::new(),
        };
        dictionary.string("");
        dictionary
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.table.string_table.len() as i32;
        self.table.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: &str) -> i32 {
        let key = self.string(key);
        let table = &mut self.table.attribute_table;
        *self
            .attributes
            .entry((key, value.to_owned()))
            .or_insert_with(|| {
                table.push(KeyValueAndUnit {
                    key_strindex: key,
                    value: Some(AnyValue::string(value)),
                    unit_strindex: 0,
                });
                table.len() as i32 - 1
            })
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            type_strindex: self.string(kind),
            unit_strindex: self.string(unit),
        }
    }

    /// One pprof profile into the dictionary, as an OTLP profile.
    fn profile(&mut self, kind: ProfileKind, pprof: &pprof_proto::Profile) -> Profile {
        let text = |i: i64| {
            pprof
                .string_table
                .get(usize::try_from(i).unwrap_or(usize::MAX))
                .map_or("", String::as_str)
        };
        // (sample type, the pprof value it takes): counts, priced by the
        // period on-CPU; the blocked nanoseconds off-CPU.
        let (sample_type, period, value_index) = match kind {
            ProfileKind::OnCpu { .. } => (("samples", "count"), pprof.period, 0),
            ProfileKind::OffCpu => (("offcpu", "nanoseconds"), 1, 1),
            ProfileKind::CudaLaunch => (("launches", "count"), 1, 0),
            ProfileKind::GpuWait => (("gpu_wait", "nanoseconds"), 1, 1),
        };
        let period_kind = match kind {
            ProfileKind::OnCpu { .. } => ("cpu", "nanoseconds"),
            ProfileKind::OffCpu => ("offcpu", "nanoseconds"),
            ProfileKind::CudaLaunch => ("launches", "count"),
            ProfileKind::GpuWait => ("gpu_wait", "nanoseconds"),
        };
        let mappings: HashMap<u64, i32> = pprof
            .mapping
            .iter()
            .map(|m| (m.id, self.mapping(m, text(m.filename), text(m.build_id))))
            .collect();
        let functions: HashMap<u64, i32> = pprof
            .function
            .iter()
            .map(|f| {
                let key = (
                    self.string(text(f.name)),
                    self.string(text(f.system_name)),
                    self.string(text(f.filename)),
                );
                (f.id, self.function(key, f.start_line))
            })
            .collect();
        let locations: HashMap<u64, i32> = pprof
            .location
            .iter()
            .map(|l| {
                let mapping = mappings.get(&l.mapping_id).copied().unwrap_or(0);
                let lines = l
                    .line
                    .iter()
                    .map(|line| {
                        let function = functions.get(&line.function_id).copied().unwrap_or(0);
                        (function, line.line)
                    })
                    .collect();
                (l.id, self.location(mapping, l.address, lines))
            })
            .collect();
        let samples = pprof
            .sample
            .iter()
            .map(|s| {
                let stack = s
                    .location_id
                    .iter()
                    .map(|id| locations.get(id).copied().unwrap_or(0))
                    .collect();
                let (mut trace_id, mut span_id) = (None, None);
                let mut attribute_indices = Vec::new();
                for label in &s.label {
                    let (key, value) = (text(label.key), text(label.str));
                    match key {
                        "trace_id" => trace_id = hex_bytes::<16>(value),
                        "span_id" => span_id = hex_bytes::<8>(value),
                        _ if label.str == 0 => {} // numeric: pid, tid
                        _ => {
                            let key = match SAMPLE_KEYS.iter().find(|(k, _)| *k == key) {
                                Some((_, Some(renamed))) => renamed,
                                Some((_, None)) => continue,
                                None => key,
                            };
                            attribute_indices.push(self.attribute(key, value));
                        }
                    }
                }
                attribute_indices.sort_unstable();
                attribute_indices.dedup();
                Sample {
                    stack_index: self.stack(stack),
                    attribute_indices,
                    link_index: span_id.map_or(0, |span| self.link(trace_id, span)),
                    values: vec![s.value.get(value_index).copied().unwrap_or(0)],
                }
            })
            .collect();
        Profile {
            sample_type: Some(self.value_type(sample_type.0, sample_type.1)),
            samples,
            time_unix_nano: u64::try_from(pprof.time_nanos).unwrap_or(0),
            duration_nano: u64::try_from(pprof.duration_nanos).unwrap_or(0),
            period_type: Some(self.value_type(period_kind.0, period_kind.1)),
            period,
            profile_id: super::random_id().to_vec(),
        }
    }

    fn mapping(&mut self, m: &pprof_proto::Mapping, file: &str, build_id: &str) -> i32 {
        let filename = self.string(file);
        let build_id = if build_id.is_empty() {
            0
        } else {
            self.attribute("process.executable.build_id.gnu", build_id)
        };
        let key = (
            m.memory_start,
            m.memory_limit,
            m.file_offset,
            filename,
            build_id,
        );
        let table = &mut self.table.mapping_table;
        *self.mappings.entry(key).or_insert_with(|| {
            table.push(Mapping {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename_strindex: filename,
                attribute_indices: if build_id == 0 {
                    Vec::new()
                } else {
                    vec![build_id]
                },
            });
            table.len() as i32 - 1
        })
    }

    fn function(&mut self, (name, system_name, filename): (i32, i32, i32), start: i64) -> i32 {
        let table = &mut self.table.function_table;
        *self
            .functions
            .entry((name, system_name, filename))
            .or_insert_with(|| {
                table.push(Function {
                    name_strindex: name,
                    system_name_strindex: system_name,
                    filename_strindex: filename,
                    start_line: start,
                });
                table.len() as i32 - 1
            })
    }

    fn location(&mut self, mapping: i32, address: u64, lines: Vec<(i32, i64)>) -> i32 {
        let table = &mut self.table.location_table;
        *self
            .locations
            .entry((mapping, address, lines.clone()))
            .or_insert_with(|| {
                table.push(Location {
                    mapping_index: mapping,
                    address,
                    lines: lines
                        .into_iter()
                        .map(|(function_index, line)| Line {
                            function_index,
                            line,
                            column: 0,
                        })
                        .collect(),
                });
                table.len() as i32 - 1
            })
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        let table = &mut self.table.stack_table;
        *self.stacks.entry(locations.clone()).or_insert_with(|| {
            table.push(Stack {
                location_indices: locations,
            });
            table.len() as i32 - 1
        })
    }

    fn link(&mut self, trace_id: Option<[u8; 16]>, span_id: [u8; 8]) -> i32 {
        let key = (
            trace_id.map_or_else(Vec::new, |t| t.to_vec()),
            span_id.to_vec(),
        );
        let table = &mut self.table.link_table;
        *self.links.entry(key.clone()).or_insert_with(|| {
            table.push(Link {
                trace_id: key.0,
                span_id: key.1,
            });
            table.len() as i32 - 1
        })
    }
}

/// Lower-case hex of exactly `N` bytes.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// Why a request read back from the spool is not sent again.
#[derive(Debug, thiserror::Error)]
pub enum SpooledError {
    #[error("not an OTLP profiles request: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("an OTLP request without a dictionary or profiles")]
    Empty,
    #[error("an OTLP resource without service.name")]
    Unnamed,
}

/// Checks a request read back from the spool before it is sent again.
pub fn check_spooled(body: &[u8]) -> Result<(), SpooledError> {
    let request = ExportProfilesServiceRequest::decode(body)?;
    if request.dictionary.is_none() || request.resource_profiles.is_empty() {
        return Err(SpooledError::Empty);
    }
    for resource in &request.resource_profiles {
        let named = resource.resource.as_ref().is_some_and(|r| {
            r.attributes.iter().any(|a| {
                a.key == "service.name" && a.value.as_ref().and_then(AnyValue::as_str).is_some()
            })
        });
        if !named {
            return Err(SpooledError::Unnamed);
        }
        if resource
            .scope_profiles
            .iter()
            .all(|s| s.profiles.is_empty())
        {
            return Err(SpooledError::Empty);
        }
    }
    Ok(())
}

/// What a 2xx answer says was refused (partial success), if anything.
pub fn rejected(response: &[u8]) -> Option<(i64, String)> {
    let answer = super::otlp_proto::ExportProfilesServiceResponse::decode(response).ok()?;
    let partial = answer.partial_success?;
    (partial.rejected_profiles > 0 || !partial.error_message.is_empty())
        .then_some((partial.rejected_profiles, partial.error_message))
}

#[cfg(test)]
mod tests;
