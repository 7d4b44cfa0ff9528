use super::*;
use crate::collect::TraceContext;
use crate::encode::encode_pprof;
use crate::profile::fixtures::small_profile;

fn decode(body: &[u8]) -> ExportProfilesServiceRequest {
    ExportProfilesServiceRequest::decode(body).unwrap()
}

/// A sample as read back: function names leaf first, value, attributes as
/// text, link.
type ReadSample = (Vec<String>, i64, Vec<(String, String)>, Link);

/// Each sample of the request's profile `index`.
fn samples(request: &ExportProfilesServiceRequest, index: usize) -> Vec<ReadSample> {
    let d = request.dictionary.as_ref().unwrap();
    let s = |i: i32| d.string_table[i as usize].clone();
    let profile = &request.resource_profiles[0].scope_profiles[0].profiles[index];
    profile
        .samples
        .iter()
        .map(|sample| {
            let stack = &d.stack_table[sample.stack_index as usize];
            let names = stack
                .location_indices
                .iter()
                .flat_map(|&l| d.location_table[l as usize].lines.iter())
                .map(|line| s(d.function_table[line.function_index as usize].name_strindex))
                .collect();
            let attributes = sample
                .attribute_indices
                .iter()
                .map(|&a| {
                    let a = &d.attribute_table[a as usize];
                    let value = a.value.as_ref().and_then(AnyValue::as_str).unwrap();
                    (s(a.key_strindex), value.to_owned())
                })
                .collect();
            let link = d.link_table[sample.link_index as usize].clone();
            (names, sample.values[0], attributes, link)
        })
        .collect()
}

#[test]
fn dictionary_tables_start_with_their_zero_value() {
    let pprof = encode_pprof(&small_profile()).unwrap();
    let request =
        decode(&encode_request(&resource("api", &[]), &[(small_profile().kind, &pprof)]).unwrap());
    let d = request.dictionary.unwrap();
    assert_eq!(d.string_table[0], "");
    assert_eq!(d.mapping_table[0], Mapping::default());
    assert_eq!(d.location_table[0], Location::default());
    assert_eq!(d.function_table[0], Function::default());
    assert_eq!(d.link_table[0], Link::default());
    assert_eq!(d.attribute_table[0], KeyValueAndUnit::default());
    assert_eq!(d.stack_table[0], Stack::default());
}

#[test]
fn on_cpu_samples_keep_their_stacks_counts_and_period() {
    let profile = small_profile();
    let pprof = encode_pprof(&profile).unwrap();
    let request =
        decode(&encode_request(&resource("api", &[]), &[(profile.kind, &pprof)]).unwrap());
    let d = request.dictionary.as_ref().unwrap();
    let p = &request.resource_profiles[0].scope_profiles[0].profiles[0];
    let text = |v: &Option<ValueType>| {
        let v = v.as_ref().unwrap();
        (
            d.string_table[v.type_strindex as usize].as_str(),
            d.string_table[v.unit_strindex as usize].as_str(),
        )
    };
    assert_eq!(text(&p.sample_type), ("samples", "count"));
    assert_eq!(text(&p.period_type), ("cpu", "nanoseconds"));
    assert_eq!(p.period, 10_000_000);
    assert_eq!(p.time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(p.duration_nano, 2_000_000_000);
    assert_eq!(p.profile_id.len(), 16);
    let samples = samples(&request, 0);
    assert_eq!(samples.len(), 1);
    let (names, value, attributes, link) = &samples[0];
    // Inlined frames first within a location, leaf location first.
    assert_eq!(names, &["leaf_inlined", "leaf", "main"]);
    assert_eq!(*value, 3);
    assert_eq!(
        attributes,
        &[
            ("process.executable.name".to_owned(), "prog".to_owned()),
            ("thread.name".to_owned(), "worker".to_owned())
        ]
    );
    assert_eq!(link, &Link::default());
    let mapping = &d.mapping_table[1];
    assert_eq!(
        d.string_table[mapping.filename_strindex as usize],
        "/bin/prog"
    );
    let build_id = &d.attribute_table[mapping.attribute_indices[0] as usize];
    assert_eq!(
        d.string_table[build_id.key_strindex as usize],
        "process.executable.build_id.gnu"
    );
}

#[test]
fn off_cpu_samples_carry_their_nanoseconds_and_traces_become_links() {
    let mut profile = small_profile();
    profile.kind = ProfileKind::OffCpu;
    profile.samples[0].trace = Some(TraceContext {
        trace_id: [0x4b; 16],
        span_id: [0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
    });
    let pprof = encode_pprof(&profile).unwrap();
    let on_cpu = encode_pprof(&small_profile()).unwrap();
    let request = decode(
        &encode_request(
            &resource("api", &[]),
            &[(small_profile().kind, &on_cpu), (profile.kind, &pprof)],
        )
        .unwrap(),
    );
    let (_, value, attributes, link) = &samples(&request, 1)[0];
    assert_eq!(*value, 30_000_000);
    assert!(attributes
        .iter()
        .all(|(k, _)| k != "trace_id" && k != "span_id"));
    assert_eq!(link.trace_id, vec![0x4b; 16]);
    assert_eq!(
        link.span_id,
        vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
    );
    // Both profiles share one dictionary: the same stack once.
    let d = request.dictionary.as_ref().unwrap();
    assert_eq!(d.stack_table.len(), 2);
}

#[test]
fn service_labels_become_semantic_convention_attributes() {
    let labels: Vec<(String, String)> = [
        ("service_version", "1.4.2"),
        ("deployment_environment", "prod"),
        ("service_repository", "https://github.com/acme/api"),
        ("service_git_ref", "0123abc"),
        ("pod", "api-7d9f"),
        ("team", "search"),
        ("__name__", "process_cpu"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let attributes = resource("api", &labels);
    let get = |key: &str| {
        attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("service.name"), Some("api"));
    assert_eq!(get("service.version"), Some("1.4.2"));
    assert_eq!(get("deployment.environment.name"), Some("prod"));
    assert_eq!(get("k8s.pod.name"), Some("api-7d9f"));
    assert_eq!(
        get("vcs.repository.url.full"),
        Some("https://github.com/acme/api")
    );
    assert_eq!(
        get("service_repository"),
        Some("https://github.com/acme/api")
    );
    assert_eq!(get("vcs.ref.head.revision"), Some("0123abc"));
    assert_eq!(get("team"), Some("search"));
    assert_eq!(get("__name__"), None);
}

#[test]
fn spooled_requests_are_checked_and_bad_pprof_is_an_error() {
    let pprof = encode_pprof(&small_profile()).unwrap();
    let body = encode_request(&resource("api", &[]), &[(small_profile().kind, &pprof)]).unwrap();
    check_spooled(&body).unwrap();
    assert!(check_spooled(&body[..body.len() / 2]).is_err());
    assert!(matches!(
        check_spooled(&ExportProfilesServiceRequest::default().encode_to_vec()),
        Err(SpooledError::Empty)
    ));
    assert!(encode_request(
        &resource("api", &[]),
        &[(small_profile().kind, b"not gzip")]
    )
    .is_err());
}

#[test]
fn partial_success_is_read_from_the_answer() {
    use super::super::otlp_proto::{ExportProfilesPartialSuccess, ExportProfilesServiceResponse};
    assert_eq!(rejected(&[]), None);
    let answer = ExportProfilesServiceResponse {
        partial_success: Some(ExportProfilesPartialSuccess {
            rejected_profiles: 2,
            error_message: "too old".into(),
        }),
    };
    assert_eq!(
        rejected(&answer.encode_to_vec()),
        Some((2, "too old".into()))
    );
}

#[test]
fn hex_ids_must_have_their_exact_length() {
    assert_eq!(hex_bytes::<2>("0aff"), Some([0x0a, 0xff]));
    assert_eq!(hex_bytes::<2>("0af"), None);
    assert_eq!(hex_bytes::<2>("0afg"), None);
    assert_eq!(hex_bytes::<2>("é0a"), None);
}
