//! A process's OpenTelemetry resource, from its environment
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`): the service name its
//! traces carry, so that a span in Grafana finds its profile. The
//! environment of another process holds secrets: only those two variables
//! are looked at, the rest is never kept, logged or sent, and what is read
//! is bounded (entries, lengths) and decoded as untrusted input.

/// The attributes kept, and the Pyroscope label each becomes. The VCS
/// attributes (semantic conventions `vcs.*`) become the labels Pyroscope
/// links frames to source with.
const ATTRIBUTES: [(&str, &str); 9] = [
    ("service.namespace", "service_namespace"),
    ("service.version", "service_version"),
    ("deployment.environment.name", "deployment_environment"),
    ("deployment.environment", "deployment_environment"),
    ("vcs.repository.url.full", "service_repository"),
    ("vcs.ref.head.revision", "service_git_ref"),
    ("vcs.ref.head.name", "service_git_ref"),
    ("vcs.repository.root_path", "service_root_path"),
    ("service.root_path", "service_root_path"),
];

/// Attributes read from one variable at most; values longer than
/// [`MAX_VALUE`] bytes are dropped, not cut.
const MAX_ATTRIBUTES: usize = 64;
const MAX_VALUE: usize = 256;

/// What a process says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtelResource {
    /// `OTEL_SERVICE_NAME`, else `service.name` of the attributes.
    pub service_name: Option<String>,
    /// Pyroscope label -> value, for the attributes of [`ATTRIBUTES`].
    pub labels: Vec<(&'static str, String)>,
}

/// Reads the two variables out of `/proc/PID/environ` bytes.
pub fn from_environ(environ: &[u8]) -> OtelResource {
    let mut service_name = None;
    let mut attributes = None;
    for entry in environ.split(|&b| b == 0) {
        if let Some(value) = entry.strip_prefix(b"OTEL_SERVICE_NAME=") {
            service_name = text(value);
        } else if let Some(value) = entry.strip_prefix(b"OTEL_RESOURCE_ATTRIBUTES=") {
            attributes = Some(value);
        }
    }
    let mut resource = from_attributes(attributes.map(parse_attributes).unwrap_or_default());
    if service_name.is_some() {
        resource.service_name = service_name;
    }
    resource
}

/// The service name and the kept attributes of a resource's attributes
/// (`MAX_ATTRIBUTES` at most; values cleaned as [`text`] does).
pub fn from_attributes(attributes: impl IntoIterator<Item = (String, String)>) -> OtelResource {
    let mut resource = OtelResource::default();
    for (key, value) in attributes.into_iter().take(MAX_ATTRIBUTES) {
        let Some(value) = text(value.as_bytes()) else {
            continue;
        };
        if key == "service.name" {
            resource.service_name.get_or_insert(value);
        } else if let Some(&(_, label)) = ATTRIBUTES.iter().find(|(k, _)| *k == key) {
            if !resource.labels.iter().any(|(l, _)| *l == label) {
                resource.labels.push((label, value));
            }
        }
    }
    resource.labels.sort();
    resource
}

impl OtelResource {
    /// This resource, completed by `below` where it says nothing.
    pub fn over(mut self, below: OtelResource) -> OtelResource {
        if self.service_name.is_none() {
            self.service_name = below.service_name;
        }
        for (label, value) in below.labels {
            if !self.labels.iter().any(|(l, _)| *l == label) {
                self.labels.push((label, value));
            }
        }
        self.labels.sort();
        self
    }
}

/// `key=value` pairs separated by commas, percent-encoded (the W3C
/// Baggage format the specification names); malformed pairs are skipped.
fn parse_attributes(list: &[u8]) -> Vec<(String, String)> {
    list.split(|&b| b == b',')
        .take(MAX_ATTRIBUTES)
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let key = text(&percent_decode(&pair[..eq])?)?;
            let value = text(&percent_decode(&pair[eq + 1..])?)?;
            Some((key, value))
        })
        .collect()
}

/// Trimmed UTF-8 of at most [`MAX_VALUE`] bytes without control
/// characters, or None.
fn text(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    (!text.is_empty() && text.len() <= MAX_VALUE && !text.chars().any(char::is_control))
        .then(|| text.to_owned())
}

fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_service_and_its_attributes_and_nothing_else() {
        let environ = b"PATH=/usr/bin\0API_TOKEN=secret\0OTEL_RESOURCE_ATTRIBUTES=service.name=ignored,service.version=1.2.3,deployment.environment.name=staging,vcs.repository.url.full=https%3A%2F%2Fgithub.com%2Facme%2Fapi,vcs.ref.head.revision=abc123,team=ml,broken\0OTEL_SERVICE_NAME=inference-api\0";
        let r = from_environ(environ);
        assert_eq!(r.service_name.as_deref(), Some("inference-api"));
        assert_eq!(
            r.labels,
            vec![
                ("deployment_environment", "staging".to_owned()),
                ("service_git_ref", "abc123".to_owned()),
                (
                    "service_repository",
                    "https://github.com/acme/api".to_owned()
                ),
                ("service_version", "1.2.3".to_owned()),
            ]
        );
        let debug = format!("{r:?}");
        assert!(!debug.contains("secret") && !debug.contains("team"));
    }

    #[test]
    fn service_name_from_attributes_and_hostile_values() {
        let r =
            from_environ(b"OTEL_RESOURCE_ATTRIBUTES=service.name=api%2Dv2,service.version=%zz\0");
        assert_eq!(r.service_name.as_deref(), Some("api-v2"));
        assert!(r.labels.is_empty(), "a bad escape is dropped");
        let long = format!("OTEL_SERVICE_NAME={}\0", "x".repeat(MAX_VALUE + 1));
        assert_eq!(from_environ(long.as_bytes()).service_name, None);
        assert_eq!(from_environ(b"OTEL_SERVICE_NAME=a\nb\0").service_name, None);
        assert_eq!(from_environ(b"\xff\xfe\0\0=").service_name, None);
    }
}
