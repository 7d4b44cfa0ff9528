//! Pushes profiles to Grafana Pyroscope: `POST /push.v1.PusherService/Push`
//! (connect protocol, protobuf body), and sorts the answer into what may be
//! retried and what may not.

use std::time::{Duration, SystemTime};

use prost::Message;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::push_proto::{LabelPair, PushRequest, RawProfileSeries, RawSample};

pub const PUSH_PATH: &str = "push.v1.PusherService/Push";
/// Server messages are cut to this length before they are logged.
const MAX_MESSAGE: usize = 512;

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: reqwest::Url,
    pub tenant: Option<String>,
    pub basic_auth: Option<(String, String)>,
    pub bearer_token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server URL cannot take the push path")]
    Url(#[source] url::ParseError),
    #[error("the CA file holds no usable certificate")]
    Certificate(#[source] reqwest::Error),
    #[error("a credential or tenant holds characters an HTTP header cannot carry")]
    Header,
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Connection refused, timeout, TLS failure...: retry. The message
    /// carries the whole chain of causes (a refused certificate says so).
    #[error("cannot reach the server: {}", causes(.0))]
    Network(#[source] reqwest::Error),
    /// 5xx: retry.
    #[error("server error {status}: {message}")]
    Server { status: StatusCode, message: String },
    /// 429: retry after the server's delay.
    #[error("rate limited ({message})")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Other 4xx: the data will never be accepted as it is.
    #[error("rejected with {status}: {message}")]
    Rejected { status: StatusCode, message: String },
}

/// An error and its sources, `: `-separated, with a hint when the server's
/// certificate was refused.
fn causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let part = cause.to_string();
        // hyper and reqwest repeat a cause in their own message.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    if text.contains("certificate") {
        text.push_str(" (TLS: is server.ca_file the CA that signed the server's certificate?)");
    }
    text
}

impl PushError {
    pub fn retryable(&self) -> bool {
        !matches!(self, PushError::Rejected { .. })
    }
}

pub struct PushClient {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl PushClient {
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let url = base.join(PUSH_PATH).map_err(ClientError::Url)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/proto"));
        if let Some(tenant) = &config.tenant {
            headers.insert(
                "X-Scope-OrgID",
                HeaderValue::from_str(tenant).map_err(|_| ClientError::Header)?,
            );
        }
        let auth = match (&config.basic_auth, &config.bearer_token) {
            (Some((user, password)), _) => {
                use base64_lite::encode;
                Some(format!(
                    "Basic {}",
                    encode(format!("{user}:{password}").as_bytes())
                ))
            }
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        };
        if let Some(auth) = auth {
            let mut value = HeaderValue::from_str(&auth).map_err(|_| ClientError::Header)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("smolder/", env!("CARGO_PKG_VERSION")))
            .https_only(config.base_url.scheme() == "https");
        if let Some(pem) = &config.ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(ClientError::Certificate)?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            client: builder.build().map_err(ClientError::Build)?,
            url,
        })
    }

    /// Sends one encoded [`PushRequest`].
    pub async fn push(&self, body: Vec<u8>) -> Result<(), PushError> {
        let response = self
            .client
            .post(self.url.clone())
            .body(body)
            .send()
            .await
            .map_err(PushError::Network)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.text().await.unwrap_or_default();
        let message = server_message(&text);
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => PushError::RateLimited {
                retry_after,
                message,
            },
            s if s.is_server_error() => PushError::Server { status, message },
            _ => PushError::Rejected { status, message },
        })
    }
}

/// The `message` of a connect error body (`{"code":..,"message":..}`), or
/// the body itself, cut short and stripped of control characters.
fn server_message(body: &str) -> String {
    let message = body
        .find("\"message\":\"")
        .map(|at| &body[at + 11..])
        .and_then(|rest| rest.find('"').map(|end| &rest[..end]))
        .unwrap_or(body);
    message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE)
        .collect()
}

/// `Retry-After`: seconds (the form servers send); HTTP dates are not
/// parsed and fall back to backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

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
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most len bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Fall back to time: the id only needs to be unique enough.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = t.to_le_bytes();
    }
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

/// Standard base64, for the basic auth header.
mod base64_lite {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        let e = |s: &str| base64_lite::encode(s.as_bytes());
        assert_eq!(e(""), "");
        assert_eq!(e("f"), "Zg==");
        assert_eq!(e("fo"), "Zm8=");
        assert_eq!(e("foo"), "Zm9v");
        assert_eq!(e("user:pa55"), "dXNlcjpwYTU1");
    }

    #[test]
    fn reads_connect_error_messages() {
        assert_eq!(
            server_message(r#"{"code":"invalid_argument","message":"profile too old"}"#),
            "profile too old"
        );
        assert_eq!(server_message("plain\ntext"), "plaintext");
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

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

    #[test]
    fn push_url_keeps_a_base_path() {
        let config = |url: &str| ClientConfig {
            base_url: url.parse().unwrap(),
            tenant: None,
            basic_auth: None,
            bearer_token: None,
            ca_pem: None,
            timeout: Duration::from_secs(1),
        };
        let client = PushClient::new(&config("http://127.0.0.1:4040/pyroscope")).unwrap();
        assert_eq!(
            client.url.as_str(),
            "http://127.0.0.1:4040/pyroscope/push.v1.PusherService/Push"
        );
        let client = PushClient::new(&config("http://127.0.0.1:4040")).unwrap();
        assert_eq!(
            client.url.as_str(),
            "http://127.0.0.1:4040/push.v1.PusherService/Push"
        );
    }
}
