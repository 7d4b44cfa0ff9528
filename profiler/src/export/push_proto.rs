//! Pyroscope's push API messages (`push/v1/push.proto` and `types/v1`
//! `LabelPair` of github.com/grafana/pyroscope/api), as prost messages.
//! Field numbers are the wire contract: keep them.

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// A gzipped pprof profile.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// A UUID for the profile.
    #[prost(string, tag = "2")]
    pub id: String,
}

/// Why a request read back from the spool is not sent again.
#[derive(Debug, thiserror::Error)]
pub enum SpooledError {
    #[error("not a push request: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("a push request without series")]
    Empty,
    #[error("a series without a service_name label or samples")]
    Series,
    #[error("a sample that is not a gzipped profile")]
    NotGzip,
}

/// Checks a request read back from the spool before it is sent again: the
/// spool outlives the run that wrote it, and anything in the directory
/// could have changed it.
pub fn check_spooled(body: &[u8]) -> Result<(), SpooledError> {
    let request = <PushRequest as prost::Message>::decode(body)?;
    if request.series.is_empty() {
        return Err(SpooledError::Empty);
    }
    for series in &request.series {
        let named = series
            .labels
            .iter()
            .any(|l| l.name == "service_name" && !l.value.is_empty());
        if !named || series.samples.is_empty() {
            return Err(SpooledError::Series);
        }
        if series
            .samples
            .iter()
            .any(|s| !s.raw_profile.starts_with(&[0x1f, 0x8b]))
        {
            return Err(SpooledError::NotGzip);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str, profile: &[u8]) -> Vec<u8> {
        prost::Message::encode_to_vec(&PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![LabelPair {
                    name: "service_name".into(),
                    value: service.into(),
                }],
                samples: vec![RawSample {
                    raw_profile: profile.to_vec(),
                    id: "id".into(),
                }],
            }],
        })
    }

    #[test]
    fn spooled_requests_are_checked_before_replay() {
        assert!(check_spooled(&request("api", &[0x1f, 0x8b, 8, 0])).is_ok());
        assert!(matches!(
            check_spooled(&request("api", b"plain")),
            Err(SpooledError::NotGzip)
        ));
        assert!(matches!(
            check_spooled(&request("", &[0x1f, 0x8b])),
            Err(SpooledError::Series)
        ));
        assert!(matches!(check_spooled(&[]), Err(SpooledError::Empty)));
        assert!(matches!(
            check_spooled(b"\xff\xff\xff"),
            Err(SpooledError::Decode(_))
        ));
    }
}
