//! Grafana Pyroscope's push API: `POST /push.v1.PusherService/Push`
//! (connect protocol, protobuf body), one request per service and window.

use prost::Message;

use super::push_proto::{LabelPair, PushRequest, RawProfileSeries, RawSample};

/// One series (a profile and its labels) of a push request.
pub struct Series<'a> {
    pub labels: &'a [(String, String)],
    pub pprof_gz: Vec<u8>,
}

/// Encodes series into one push request body.
pub fn encode_request(series: Vec<Series<'_>>) -> Vec<u8> {
    let request = PushRequest {
        series: series
            .into_iter()
            .map(|s| RawProfileSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| LabelPair {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: vec![RawSample {
                    raw_profile: s.pprof_gz,
                    id: profile_id(),
                }],
            })
            .collect(),
    };
    request.encode_to_vec()
}

/// A random version-4 UUID, from the kernel's random pool.
fn profile_id() -> String {
    let mut bytes = super::random_id();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let labels = vec![("service_name".to_owned(), "api".to_owned())];
        let body = encode_request(vec![Series {
            labels: &labels,
            pprof_gz: vec![1, 2, 3],
        }]);
        let back = PushRequest::decode(body.as_slice()).unwrap();
        assert_eq!(back.series[0].labels[0].value, "api");
        assert_eq!(back.series[0].samples[0].raw_profile, vec![1, 2, 3]);
        assert_eq!(back.series[0].samples[0].id.len(), 36);
    }
}
