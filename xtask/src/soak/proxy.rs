//! A fault-injecting HTTP/1.1 proxy between the agent and Pyroscope: it
//! forwards requests as they are, or answers them with the fault of the
//! moment (slow, 429, 5xx), and counts what it saw. When the server is
//! stopped, connecting upstream fails and the agent's connection is closed
//! without an answer, as with a server that is down.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What the proxy does to each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward.
    None,
    /// Forward, after holding the request this long.
    Slow(Duration),
    /// Answer 429 with a `Retry-After` of this many seconds.
    TooManyRequests(u32),
    /// Answer with this 5xx status.
    ServerError(u16),
}

/// Requests seen, by outcome.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded_ok: AtomicU64,
    pub forwarded_other: AtomicU64,
    pub faulted: AtomicU64,
    pub unreachable: AtomicU64,
}

pub struct Proxy {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream_port`.
    pub fn start(upstream_port: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (f, c, s) = (fault.clone(), counts.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (f, c) = (f.clone(), c.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, upstream_port, &f, &c);
                });
            }
        });
        Ok(Self {
            port,
            fault,
            counts,
            stop,
        })
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One HTTP message: the head (start line and headers, as received) and
/// the body.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Message {
    fn status(&self) -> Option<u16> {
        let line = self.head.split(|&b| b == b'\n').next()?;
        std::str::from_utf8(line)
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn bytes(&self) -> Vec<u8> {
        [&self.head[..], &self.body[..]].concat()
    }
}

/// Reads one message; `None` at a clean end of the connection. Bodies come
/// with a Content-Length or chunked (kept in their chunked form).
fn read_message(reader: &mut impl BufRead) -> Result<Option<Message>> {
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a message head");
        }
        head.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(value) = text.strip_prefix("content-length:") {
            length = value.trim().parse().context("content-length")?;
        }
        if text.starts_with("transfer-encoding:") && text.contains("chunked") {
            chunked = true;
        }
        if line == b"\r\n" && head.len() > 2 {
            break;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = Vec::new();
            reader.read_until(b'\n', &mut size_line)?;
            body.extend_from_slice(&size_line);
            let text = String::from_utf8_lossy(&size_line);
            let size = usize::from_str_radix(text.trim().split(';').next().unwrap_or(""), 16)
                .context("chunk size")?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Some(Message { head, body }))
}

fn answer(status: u16, reason: &str, extra: &str) -> Vec<u8> {
    let body = format!("{{\"code\":\"soak fault\",\"message\":\"{reason}\"}}");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    fault: &Mutex<Fault>,
    counts: &Counts,
) -> Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    while let Some(request) = read_message(&mut reader)? {
        let now = *fault.lock().expect("fault lock");
        let reply = match now {
            Fault::TooManyRequests(after) => {
                counts.faulted.fetch_add(1, Ordering::Relaxed);
                answer(
                    429,
                    "Too Many Requests",
                    &format!("Retry-After: {after}\r\n"),
                )
            }
            Fault::ServerError(status) => {
                counts.faulted.fetch_add(1, Ordering::Relaxed);
                answer(status, "Service Unavailable", "")
            }
            Fault::None | Fault::Slow(_) => {
                if let Fault::Slow(delay) = now {
                    std::thread::sleep(delay);
                }
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    counts.unreachable.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                };
                upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
                upstream.write_all(&request.bytes())?;
                let Some(response) = read_message(&mut BufReader::new(upstream))? else {
                    counts.unreachable.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                };
                if response.status() == Some(200) {
                    counts.forwarded_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.forwarded_other.fetch_add(1, Ordering::Relaxed);
                }
                response.bytes()
            }
        };
        writer.write_all(&reply)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_and_chunked_messages() {
        let text = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let mut reader = BufReader::new(&text[..]);
        let first = read_message(&mut reader).unwrap().unwrap();
        assert_eq!(first.body, b"abc");
        let second = read_message(&mut reader).unwrap().unwrap();
        assert_eq!(second.status(), Some(200));
        assert_eq!(second.body, b"2\r\nhi\r\n0\r\n\r\n");
        assert!(read_message(&mut reader).unwrap().is_none());
    }
}
