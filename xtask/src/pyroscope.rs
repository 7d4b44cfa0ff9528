//! Builds a real Grafana Pyroscope server from the Go module proxy, once, and
//! caches it outside the clone (`~/.cache/smolder/pyroscope-VERSION/`).
//! Tests of `smolder agent` start it on loopback; see docs/contributing.md
//! for the flags that keep every address on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{output, run};

pub const VERSION: &str = "v1.21.1";
/// The `api` submodule the server's go.mod replaces with `./api`.
const API_VERSION: &str = "v1.5.0";

/// `~/.cache/smolder`: builds that outlive the clone.
pub fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("smolder")
}

fn cache_dir() -> PathBuf {
    cache_root().join(format!("pyroscope-{VERSION}"))
}

/// `go mod download -json MODULE@VERSION`: the module's directory.
fn download(module: &str) -> Result<PathBuf> {
    download_with(module, &[])
}

/// [`download`] with extra environment for go.
pub fn download_with(module: &str, env: &[(&str, &str)]) -> Result<PathBuf> {
    let out = output(
        Command::new("go")
            .args(["mod", "download", "-json", module])
            .envs(env.iter().copied()),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"Dir\": \"")?.strip_suffix("\","))
        .with_context(|| format!("no Dir for {module} in:\n{text}"))?;
    Ok(PathBuf::from(dir))
}

/// Copies a read-only module tree into a writable place.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            let mut perms = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)] // our own copy, owned by us
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms)?;
        }
    }
    Ok(())
}

/// The cached server binary, built first if missing (about 7 minutes on 2 cores).
pub fn ensure() -> Result<PathBuf> {
    let dir = cache_dir();
    let binary = dir.join("pyroscope");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "building Grafana Pyroscope {VERSION} into {} (several minutes, once)",
        dir.display()
    );
    let server = download(&format!("github.com/grafana/pyroscope@{VERSION}"))?;
    let api = download(&format!("github.com/grafana/pyroscope/api@{API_VERSION}"))?;
    let src = dir.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    copy_tree(&server, &src)?;
    let api_dir = src.join("api");
    if api_dir.exists() {
        std::fs::remove_dir_all(&api_dir)?;
    }
    copy_tree(&api, &api_dir)?;
    go_build(
        &src,
        &binary,
        &["-tags", "netgo"],
        "./cmd/pyroscope",
        &[("GOWORK", "off")],
    )?;
    Ok(binary)
}

/// `go build` of `package` in the module copy `src` into `binary` (through
/// a temporary name, so an interrupted build leaves no binary), then removes
/// the copy.
pub fn go_build(
    src: &Path,
    binary: &Path,
    flags: &[&str],
    package: &str,
    env: &[(&str, &str)],
) -> Result<()> {
    let partial = binary.with_extension("partial");
    run(Command::new("go")
        .args(["build", "-trimpath"])
        .args(flags)
        .arg("-o")
        .arg(&partial)
        .arg(package)
        .current_dir(src)
        .envs(env.iter().copied())
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod"))?;
    std::fs::rename(&partial, binary)?;
    std::fs::remove_dir_all(src)?;
    if !binary.is_file() {
        bail!("the build produced no {}", binary.display());
    }
    Ok(())
}

/// A Pyroscope server started on loopback for the benchmarks, killed on drop.
pub struct Server {
    child: std::process::Child,
    pub http_port: u16,
    binary: PathBuf,
    args: Vec<String>,
    _data: TempDir,
}

/// A temporary directory removed on drop (xtask has no tempfile crate).
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    /// Starts a fresh server with every address on 127.0.0.1 (the flag set
    /// docs/contributing.md explains) and waits for `/ready`.
    pub fn start() -> Result<Self> {
        let binary = ensure()?;
        let data =
            TempDir(std::env::temp_dir().join(format!("smolder-pyroscope-{}", std::process::id())));
        let (http, grpc, memberlist) = (free_port()?, free_port()?, free_port()?);
        let args = vec![
            "-target=all".to_owned(),
            "-server.http-listen-address=127.0.0.1".to_owned(),
            format!("-server.http-listen-port={http}"),
            "-server.grpc-listen-address=127.0.0.1".to_owned(),
            format!("-server.grpc-listen-port={grpc}"),
            "-memberlist.bind-addr=127.0.0.1".to_owned(),
            format!("-memberlist.bind-port={memberlist}"),
            "-memberlist.advertise-addr=127.0.0.1".to_owned(),
            format!("-memberlist.advertise-port={memberlist}"),
            "-distributor.ring.instance-addr=127.0.0.1".to_owned(),
            "-distributor.ring.store=inmemory".to_owned(),
            "-overrides-exporter.ring.instance-addr=127.0.0.1".to_owned(),
            "-overrides-exporter.ring.store=inmemory".to_owned(),
            "-query-frontend.instance-addr=127.0.0.1".to_owned(),
            "-query-scheduler.ring.instance-addr=127.0.0.1".to_owned(),
            "-query-scheduler.ring.store=inmemory".to_owned(),
            "-ingester.lifecycler.addr=127.0.0.1".to_owned(),
            "-ring.store=inmemory".to_owned(),
            "-ingester.min-ready-duration=0s".to_owned(),
            format!("-pyroscopedb.data-path={}", data.0.display()),
            "-self-profiling.disable-push=true".to_owned(),
            "-usage-stats.enabled=false".to_owned(),
        ];
        let child = spawn(&binary, &args)?;
        let server = Self {
            child,
            http_port: http,
            binary,
            args,
            _data: data,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&self) -> Result<()> {
        for _ in 0..300 {
            if self
                .get("/ready")
                .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        bail!("pyroscope did not become ready in 60 s")
    }

    /// Stops the server as an operator would (SIGTERM: it flushes what it
    /// holds), killing it if it has not exited after 60 s.
    pub fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..600 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again, on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn(&self.binary, &self.args)?;
        self.wait_ready()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A plain HTTP/1.1 GET on loopback: the whole response.
    pub fn get(&self, path: &str) -> Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }

    /// A JSON POST (Connect's unary protocol, as the query API takes it):
    /// the response body, an error for any status but 200.
    pub fn post_json(&self, path: &str, body: &str) -> Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{path}: {}", text.lines().next().unwrap_or(""));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return dechunk(body);
        }
        Ok(body.to_owned())
    }
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

fn spawn(binary: &Path, args: &[String]) -> Result<std::process::Child> {
    Ok(crate::util::die_with_parent(&mut Command::new(binary))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
