//! Sends encoded requests over HTTP, to Grafana Pyroscope's push API or to
//! an OTLP/HTTP profiles endpoint, and sorts the answer into what may be
//! retried and what may not.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::otlp;

/// What the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Pyroscope's `push.v1.PusherService/Push` (connect, protobuf).
    Pyroscope,
    /// OTLP profiles over HTTP with a protobuf body
    /// (`/v1development/profiles`, the OTLP/HTTP default path).
    Otlp,
}

impl Protocol {
    /// The path appended to the server URL.
    pub fn path(self) -> &'static str {
        match self {
            Protocol::Pyroscope => "push.v1.PusherService/Push",
            Protocol::Otlp => "v1development/profiles",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Protocol::Pyroscope => "application/proto",
            Protocol::Otlp => "application/x-protobuf",
        }
    }

    /// The name in config and logs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pyroscope => "pyroscope",
            Protocol::Otlp => "otlp",
        }
    }
}
/// Server messages are cut to this length before they are logged.
const MAX_MESSAGE: usize = 512;

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: reqwest::Url,
    pub protocol: Protocol,
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
    /// OTLP: accepted, but the answer says some profiles were refused
    /// (not retried either).
    #[error("{rejected} profiles refused: {message}")]
    PartlyRejected { rejected: i64, message: String },
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
        !matches!(
            self,
            PushError::Rejected { .. } | PushError::PartlyRejected { .. }
        )
    }
}

pub struct PushClient {
    client: reqwest::Client,
    url: reqwest::Url,
    protocol: Protocol,
}

impl PushClient {
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let url = base
            .join(config.protocol.path())
            .map_err(ClientError::Url)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(config.protocol.content_type()),
        );
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
            protocol: config.protocol,
        })
    }

    /// Sends one encoded request of the client's protocol.
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
            if self.protocol == Protocol::Otlp {
                let answer = response.bytes().await.unwrap_or_default();
                if let Some((rejected, message)) = otlp::rejected(&answer) {
                    return Err(PushError::PartlyRejected {
                        rejected,
                        message: server_message(&message),
                    });
                }
            }
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
    fn push_url_keeps_a_base_path() {
        let config = |url: &str| ClientConfig {
            base_url: url.parse().unwrap(),
            protocol: Protocol::Pyroscope,
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
        let otlp = ClientConfig {
            protocol: Protocol::Otlp,
            ..config("http://127.0.0.1:4318")
        };
        assert_eq!(
            PushClient::new(&otlp).unwrap().url.as_str(),
            "http://127.0.0.1:4318/v1development/profiles"
        );
    }
}
