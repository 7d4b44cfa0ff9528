//! pprof encoding: gzipped `profile.proto`, readable by `go tool pprof` and
//! Pyroscope.

use std::collections::HashMap;
use std::io::Write;
use std::time::UNIX_EPOCH;

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::proto;
use super::EncodeError;
use crate::profile::{Profile, ProfileKind};

/// Interns strings; index 0 is the empty string, as pprof requires.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// How samples are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleLabels {
    /// `pid`, `tid`, `comm`, `thread_name`, all strings, and `trace_id` and
    /// `span_id` on samples taken in a trace: for files.
    Strings,
    /// `pid` and `tid` as numbers, `comm` and `thread_name` as strings:
    /// Pyroscope turns every string label into a series label, and pids
    /// would make series without bound. Numeric labels stay in the profile.
    /// `span_id` is kept (Pyroscope stores it per sample for span profiles,
    /// not as a series label); `trace_id` is left out, as it would be one
    /// series per trace. See docs/trace-context.md.
    Pyroscope,
}

/// Labels smolder sets itself: a goroutine label of the same key is left
/// out rather than doubled.
const RESERVED_LABELS: [&str; 7] = [
    "pid",
    "tid",
    "comm",
    "thread_name",
    "trace_id",
    "gil",
    "gpu_wait",
];

/// Builds the pprof message (not yet serialized).
pub(crate) fn to_proto(profile: &Profile, labels: SampleLabels) -> proto::Profile {
    let mut strings = Strings::new();
    let value_type = |strings: &mut Strings, t: &str, u: &str| proto::ValueType {
        r#type: strings.get(t),
        unit: strings.get(u),
    };
    // (count type, time type): the time type is also the period type.
    // Launches have a count only.
    let (count_type, time_type) = match profile.kind {
        ProfileKind::OnCpu { .. } => (("samples", "count"), Some(("cpu", "nanoseconds"))),
        ProfileKind::OffCpu => (("blocks", "count"), Some(("offcpu", "nanoseconds"))),
        ProfileKind::CudaLaunch => (("launches", "count"), None),
        ProfileKind::GpuWait => (("calls", "count"), Some(("gpu_wait", "nanoseconds"))),
    };
    let mut sample_type = vec![value_type(&mut strings, count_type.0, count_type.1)];
    sample_type.extend(time_type.map(|(t, u)| value_type(&mut strings, t, u)));
    let (period_name, period_unit) = time_type.unwrap_or(count_type);
    let period_type = Some(value_type(&mut strings, period_name, period_unit));
    let period = profile.period_ns() as i64;

    let mapping = profile
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| proto::Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename: strings.get(&m.file),
            build_id: m.build_id.as_deref().map_or(0, |b| strings.get(b)),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        })
        .collect();

    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64, i64), u64> = HashMap::new();
    let location = profile
        .locations
        .iter()
        .enumerate()
        .map(|(i, loc)| {
            let line = loc
                .frames
                .iter()
                .map(|frame| {
                    let key = (
                        strings.get(&frame.name),
                        strings.get(&frame.system_name),
                        strings.get(frame.file.as_deref().unwrap_or("")),
                    );
                    let function_id = *function_ids.entry(key).or_insert_with(|| {
                        let id = functions.len() as u64 + 1;
                        functions.push(proto::Function {
                            id,
                            name: key.0,
                            system_name: key.1,
                            filename: key.2,
                            start_line: 0,
                        });
                        id
                    });
                    proto::Line {
                        function_id,
                        line: frame.line.map_or(0, i64::from),
                        column: 0,
                    }
                })
                .collect();
            proto::Location {
                id: i as u64 + 1,
                mapping_id: loc.mapping.map_or(0, |m| m as u64 + 1),
                address: loc.address,
                line,
                is_folded: false,
            }
        })
        .collect();

    let keys = [
        strings.get("pid"),
        strings.get("tid"),
        strings.get("comm"),
        strings.get("thread_name"),
        strings.get("span_id"),
        strings.get("trace_id"),
        strings.get("gil"),
        strings.get("gpu_wait"),
    ];
    let sample = profile
        .samples
        .iter()
        .map(|s| {
            let label = |key: i64, value: &str, strings: &mut Strings| proto::Label {
                key,
                str: strings.get(value),
                num: 0,
                num_unit: 0,
            };
            let number = |key: i64, value: u32| proto::Label {
                key,
                str: 0,
                num: i64::from(value),
                num_unit: 0,
            };
            let (pid, tid) = match labels {
                SampleLabels::Strings => (
                    label(keys[0], &s.pid.to_string(), &mut strings),
                    label(keys[1], &s.tid.to_string(), &mut strings),
                ),
                SampleLabels::Pyroscope => (number(keys[0], s.pid), number(keys[1], s.tid)),
            };
            let mut sample_labels = vec![
                pid,
                tid,
                label(keys[2], &s.comm, &mut strings),
                label(keys[3], &s.thread_name, &mut strings),
            ];
            if s.gil_wait {
                sample_labels.push(label(keys[6], "wait", &mut strings));
            }
            if let Some(wait) = s.gpu_wait {
                sample_labels.push(label(keys[7], wait.label(), &mut strings));
            }
            if let Some(trace) = &s.trace {
                sample_labels.push(label(keys[4], &trace.span_id_hex(), &mut strings));
                if labels == SampleLabels::Strings {
                    sample_labels.push(label(keys[5], &trace.trace_id_hex(), &mut strings));
                }
            }
            // A goroutine's pprof labels; a `span_id` among them (Grafana's
            // otel-profiling-go) counts when the thread published no trace.
            for (key, value) in s.labels.iter().flat_map(|set| set.iter()) {
                if RESERVED_LABELS.contains(&&**key) || (&**key == "span_id" && s.trace.is_some()) {
                    continue;
                }
                let key = strings.get(key);
                sample_labels.push(label(key, value, &mut strings));
            }
            proto::Sample {
                location_id: s.locations.iter().map(|&l| l as u64 + 1).collect(),
                value: if time_type.is_some() {
                    vec![s.count as i64, s.nanos as i64]
                } else {
                    vec![s.count as i64]
                },
                label: sample_labels,
            }
        })
        .collect();

    let time_nanos = profile
        .start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    proto::Profile {
        sample_type,
        sample,
        mapping,
        location,
        function: functions,
        string_table: strings.table,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos,
        duration_nanos: profile.duration.as_nanos() as i64,
        period_type,
        period,
        comment: Vec::new(),
        default_sample_type: 0,
    }
}

/// Serializes and gzips the profile, every label a string.
pub fn encode_pprof(profile: &Profile) -> Result<Vec<u8>, EncodeError> {
    encode_pprof_labelled(profile, SampleLabels::Strings)
}

/// Serializes and gzips the profile with the given sample labels.
pub fn encode_pprof_labelled(
    profile: &Profile,
    labels: SampleLabels,
) -> Result<Vec<u8>, EncodeError> {
    let bytes = to_proto(profile, labels).encode_to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    gz.write_all(&bytes)?;
    Ok(gz.finish()?)
}

pub fn write_pprof(profile: &Profile, out: &mut impl Write) -> Result<(), EncodeError> {
    out.write_all(&encode_pprof(profile)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::profile::fixtures::small_profile;

    fn decode(bytes: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .unwrap();
        proto::Profile::decode(raw.as_slice()).unwrap()
    }

    /// The string labels of the first sample, as (key, value).
    fn string_labels(p: &proto::Profile) -> Vec<(String, String)> {
        let s = |i: i64| p.string_table[i as usize].clone();
        p.sample[0]
            .label
            .iter()
            .filter(|l| l.str != 0)
            .map(|l| (s(l.key), s(l.str)))
            .collect()
    }

    #[test]
    fn trace_ids_label_samples_and_only_span_ids_go_to_pyroscope() {
        let mut profile = small_profile();
        profile.samples[0].trace = Some(crate::collect::TraceContext {
            trace_id: [0x4b; 16],
            span_id: [0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        });
        let span = ("span_id".to_string(), "00f067aa0ba902b7".to_string());
        let trace = ("trace_id".to_string(), "4b".repeat(16));
        let files = string_labels(&decode(&encode_pprof(&profile).unwrap()));
        assert!(files.contains(&span) && files.contains(&trace), "{files:?}");
        let pyroscope = string_labels(&decode(
            &encode_pprof_labelled(&profile, SampleLabels::Pyroscope).unwrap(),
        ));
        assert!(pyroscope.contains(&span), "{pyroscope:?}");
        assert!(
            pyroscope.iter().all(|(k, _)| k != "trace_id"),
            "{pyroscope:?}"
        );
    }

    #[test]
    fn launches_have_one_value_and_gpu_waits_a_label() {
        let mut profile = small_profile();
        profile.kind = ProfileKind::CudaLaunch;
        let p = decode(&encode_pprof(&profile).unwrap());
        let s = |i: i64| p.string_table[i as usize].clone();
        let types: Vec<(String, String)> = p
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(types, vec![("launches".to_string(), "count".to_string())]);
        assert_eq!(p.sample[0].value, vec![3]);
        assert_eq!(p.period, 1);

        profile.kind = ProfileKind::GpuWait;
        profile.samples[0].gpu_wait = Some(crate::profile::GpuWait::Blocked);
        let p = decode(&encode_pprof(&profile).unwrap());
        let s = |i: i64| p.string_table[i as usize].clone();
        assert_eq!(s(p.sample_type[1].r#type), "gpu_wait");
        assert_eq!(p.sample[0].value, vec![3, 30_000_000]);
        let labels = string_labels(&p);
        assert!(
            labels.contains(&("gpu_wait".to_string(), "blocked".to_string())),
            "{labels:?}"
        );
    }

    #[test]
    fn round_trips_through_gzip_and_protobuf() {
        let bytes = encode_pprof(&small_profile()).unwrap();
        let p = decode(&bytes);
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(p.period, 10_000_000);
        assert_eq!(
            (s(p.sample_type[1].r#type), s(p.sample_type[1].unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.sample[0].value, vec![3, 30_000_000]);
        assert_eq!(p.sample[0].location_id, vec![1, 2]);
        assert_eq!(p.location[0].line.len(), 2);
        assert_eq!(
            s(p.function[(p.location[0].line[0].function_id - 1) as usize].name),
            "leaf_inlined"
        );
        assert_eq!(s(p.mapping[0].build_id), "abcd");
        let labels: Vec<(&str, &str)> = p.sample[0]
            .label
            .iter()
            .map(|l| (s(l.key), s(l.str)))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("pid", "7"),
                ("tid", "8"),
                ("comm", "prog"),
                ("thread_name", "worker")
            ]
        );
        assert_eq!(p.duration_nanos, 2_000_000_000);
    }
}
