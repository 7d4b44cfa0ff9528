//! Builds workloads, runs the smolder binary, reads its pprof output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use prost::Message;
use smolder::encode::pprof_proto;

/// True when running as root; otherwise fails in CI and skips loudly elsewhere.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    if uid.split_whitespace().nth(1) == Some("0") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the BPF tests as root"
    );
    eprintln!("SKIPPED: smolder record tests need root (BPF)");
    false
}

/// Compiles `testdata/NAME.c` with clang and frame pointers (and pthreads),
/// once per test run: rebuilding over a binary that another test is running
/// would turn it into a deleted file under that process.
pub fn workload(name: &str) -> PathBuf {
    build_c(
        name,
        "clang-19",
        &[
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-pthread",
        ],
    )
}

/// Compiles `testdata/NAME.c` the way distributions build most native code:
/// gcc -O2 without frame pointers (GCC also drops them from leaf functions).
pub fn workload_without_frame_pointers(name: &str) -> PathBuf {
    build_c(
        name,
        "gcc",
        &["-O2", "-g", "-fomit-frame-pointer", "-pthread", "-ldl"],
    )
}

fn build_c(name: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    // A directory per test run keeps the binary's name (and so its comm).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("workloads")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(format!("{name}.c"));
    let status = Command::new(compiler)
        .arg(&source)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("{compiler}: {e} (run `cargo xtask setup`)"));
    assert!(status.success(), "compiling {}", source.display());
    built.push((name.to_owned(), out.clone()));
    out
}

pub fn smolder(args: &[&str]) -> Output {
    smolder_with_env(args, &[])
}

/// Runs smolder with extra environment variables (inherited by a command it
/// starts).
pub fn smolder_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_smolder"))
        .args(args)
        .env("SMOLDER_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .expect("running smolder");
    eprintln!(
        "smolder {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs smolder and insists it succeeds; returns its stderr.
pub fn smolder_ok(args: &[&str]) -> String {
    let output = smolder(args);
    assert!(output.status.success(), "smolder failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `Wrote N samples ...` from the summary.
pub fn reported_samples(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("Wrote ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("summary line")
}

/// x86-64 kernel addresses start here.
const KERNEL_SPACE: u64 = 0xffff_8000_0000_0000;

/// A pprof sample with its stack as names, root first.
#[derive(Debug, Clone)]
pub struct Stack {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub thread_name: String,
    pub frames: Vec<String>,
    /// First value: samples (on-CPU) or blocks (off-CPU).
    pub count: u64,
    /// Second value: nanoseconds on or off CPU.
    pub nanos: u64,
    /// The innermost user-space frame (below any kernel frames), inlined
    /// calls included.
    pub user_leaf: Option<String>,
    /// The user-space frames (and `[truncated]` / `[unwind error]`), root first.
    pub user_frames: Vec<String>,
    /// (file, line) of each of `frames` ("" and 0 where unknown).
    pub sources: Vec<(String, i64)>,
    /// `trace_id` and `span_id` labels ("" when the sample has none).
    pub trace_id: String,
    pub span_id: String,
    /// `gil` label: "wait" for off-CPU time spent waiting for the GIL.
    pub gil: String,
    /// Every string label, sorted by key (Go's pprof labels among them).
    pub labels: Vec<(String, String)>,
}

impl Stack {
    /// The value of string label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `chain` appears in the stack, contiguous and in order.
    pub fn contains(&self, chain: &[&str]) -> bool {
        self.frames
            .windows(chain.len())
            .any(|w| w.iter().zip(chain).all(|(f, c)| f == c))
    }
}

/// `smolder record -p PID -d SECONDS` (plus `extra` options) into a pprof
/// file: the stacks of that process, and smolder's stderr. A refused update
/// of the unwind maps fails the test.
pub fn record_pid(pid: u32, seconds: u32, extra: &[&str]) -> (Vec<Stack>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pb.gz");
    let (pid_text, duration) = (pid.to_string(), format!("{seconds}s"));
    let mut args = vec![
        "record",
        "-p",
        &pid_text,
        "-d",
        &duration,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let stderr = smolder_ok(&args);
    let (_, stacks) = read_pprof(&out);
    (
        stacks.into_iter().filter(|s| s.pid == pid).collect(),
        stderr,
    )
}

/// A `smolder record -p PID` running in the background, from the moment it
/// samples (it printed "Sampling ...") until `finish`.
pub struct Recording {
    child: Option<std::process::Child>,
    /// smolder's stderr, line by line, as it comes.
    lines: std::sync::mpsc::Receiver<String>,
    /// Everything read from `lines` so far.
    text: String,
    out: PathBuf,
    pid: u32,
    dir: Option<tempfile::TempDir>,
}

impl Recording {
    pub fn start(pid: u32, seconds: u32, extra: &[&str]) -> Self {
        let target = ["-p".to_owned(), pid.to_string()];
        let duration = ["-d".to_owned(), format!("{seconds}s")];
        let args: Vec<&str> = target.iter().chain(&duration).map(String::as_str).collect();
        Self::start_with(&args, pid, extra)
    }

    /// `smolder record TARGET... -o DIR/out.pb.gz EXTRA...`; `finish` keeps
    /// the stacks of `pid` (0: every process).
    pub fn start_with(target: &[&str], pid: u32, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.pb.gz");
        let mut child = Command::new(env!("CARGO_BIN_EXE_smolder"))
            .arg("record")
            .args(target)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .env("SMOLDER_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running smolder");
        let stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut recording = Self {
            child: Some(child),
            lines,
            text: String::new(),
            out,
            pid,
            dir: Some(dir),
        };
        if !recording.wait_for_line(|l| l.starts_with("Sampling "), Duration::from_secs(120)) {
            let status = recording.child.as_mut().expect("running").try_wait();
            panic!(
                "smolder record did not start sampling ({status:?}):\n{}",
                recording.text
            );
        }
        recording
    }

    /// Waits until smolder prints a line that `matches` (true), or for
    /// `timeout`, or until it exits (false).
    pub fn wait_for_line(&mut self, matches: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.text.push_str(&line);
                    self.text.push('\n');
                    if matches(&line) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// What smolder printed so far.
    pub fn stderr_so_far(&self) -> &str {
        &self.text
    }

    /// Asks smolder to stop and write its profiles (Ctrl-C).
    pub fn interrupt(&self) {
        if let Some(child) = self.child.as_ref() {
            // SAFETY: kill(2) with a pid we started and still hold.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
    }

    /// Waits for the capture to end: the target's stacks and smolder's stderr.
    pub fn finish(self) -> (Vec<Stack>, String) {
        let (stacks, stderr, _) = self.finish_keeping_outputs();
        (stacks, stderr)
    }

    /// Like `finish`, also handing over the directory with every output
    /// (removed when dropped).
    pub fn finish_keeping_outputs(mut self) -> (Vec<Stack>, String, tempfile::TempDir) {
        let status = self.child.take().expect("running").wait().expect("smolder");
        while let Ok(line) = self.lines.recv() {
            self.text.push_str(&line);
            self.text.push('\n');
        }
        let stderr = std::mem::take(&mut self.text);
        eprintln!("smolder record (pid {}): {status}\n{stderr}", self.pid);
        assert!(status.success(), "smolder record failed");
        let (_, stacks) = read_pprof(&self.out);
        let pid = self.pid;
        (
            stacks
                .into_iter()
                .filter(|s| pid == 0 || s.pid == pid)
                .collect(),
            stderr,
            self.dir.take().expect("kept until now"),
        )
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn read_pprof(path: &Path) -> (pprof_proto::Profile, Vec<Stack>) {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let profile = pprof_proto::Profile::decode(raw.as_slice()).unwrap();
    let s = |i: i64| profile.string_table[i as usize].clone();
    let function = |id: u64| profile.function.iter().find(|f| f.id == id).unwrap();
    let location = |id: u64| profile.location.iter().find(|l| l.id == id).unwrap();
    let stacks = profile
        .sample
        .iter()
        .map(|sample| {
            let label = |key: &str| {
                sample
                    .label
                    .iter()
                    .find(|l| s(l.key) == key)
                    .map(|l| s(l.str))
                    .unwrap_or_default()
            };
            let mut frames = Vec::new();
            let mut user_frames = Vec::new();
            let mut user_leaf = None;
            let mut sources = Vec::new();
            for &loc in sample.location_id.iter().rev() {
                let location = location(loc);
                for line in location.line.iter().rev() {
                    let name = s(function(line.function_id).name);
                    sources.push((s(function(line.function_id).filename), line.line));
                    if location.address < KERNEL_SPACE {
                        user_leaf = Some(name.clone());
                        user_frames.push(name.clone());
                    }
                    frames.push(name);
                }
            }
            Stack {
                pid: label("pid").parse().unwrap_or(0),
                tid: label("tid").parse().unwrap_or(0),
                comm: label("comm"),
                thread_name: label("thread_name"),
                frames,
                count: sample.value[0] as u64,
                nanos: sample.value.get(1).map_or(0, |&v| v as u64),
                user_leaf,
                user_frames,
                sources,
                trace_id: label("trace_id"),
                span_id: label("span_id"),
                gil: label("gil"),
                labels: {
                    let mut all: Vec<(String, String)> = sample
                        .label
                        .iter()
                        .filter(|l| l.str != 0)
                        .map(|l| (s(l.key), s(l.str)))
                        .collect();
                    all.sort();
                    all
                },
            }
        })
        .collect();
    (profile, stacks)
}

/// Share of samples (by count) for which `pred` holds.
pub fn share(stacks: &[Stack], pred: impl Fn(&Stack) -> bool) -> f64 {
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    let hit: u64 = stacks.iter().filter(|s| pred(s)).map(|s| s.count).sum();
    if total == 0 {
        0.0
    } else {
        hit as f64 / total as f64
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running workload, killed when dropped.
pub struct Running(Option<Child>);

impl Running {
    /// Spawns `command` and gives it `settle` to load its libraries and reach
    /// its loop.
    pub fn spawn(command: &mut Command, settle: std::time::Duration) -> Self {
        let child = command.spawn().expect("workload");
        std::thread::sleep(settle);
        Self(Some(child))
    }

    /// Spawns `command` with its stdout piped and waits until it prints
    /// `line` (its readiness); the rest of its output is drained on a thread.
    pub fn until_line(command: &mut Command, line: &str) -> Self {
        Self::until_line_with_output(command, line).0
    }

    /// Like [`Running::until_line`], also handing over every line printed
    /// (before `line` and after it) as it comes.
    pub fn until_line_with_output(
        command: &mut Command,
        line: &str,
    ) -> (Self, std::sync::mpsc::Receiver<String>) {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("workload");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let running = Self(Some(child));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut text = String::new();
        loop {
            text.clear();
            let n = lines.read_line(&mut text).expect("workload output");
            assert!(n > 0, "the workload exited before printing {line:?}");
            if text.trim_end() == line {
                break;
            }
            let _ = tx.send(text.trim_end().to_string());
        }
        std::thread::spawn(move || {
            for text in lines.lines().map_while(Result::ok) {
                // Nobody listening: keep draining.
                let _ = tx.send(text);
            }
        });
        (running, rx)
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// The workload's stdin, when it was spawned with `Stdio::piped()`.
    pub fn take_stdin(&mut self) -> std::process::ChildStdin {
        self.0
            .as_mut()
            .expect("running")
            .stdin
            .take()
            .expect("stdin piped")
    }

    /// Waits for the workload to exit by itself and returns what it wrote.
    pub fn finish(mut self) -> Output {
        let child = self.0.take().expect("running");
        child.wait_with_output().expect("workload output")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The machine's own CPython (pyenv here): `python3` on PATH, resolved.
pub fn machine_python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A directory under the test target dir, made once per test run.
fn run_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(name)
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds the Go program in `testdata/NAME` (with `ldflags`, e.g. `-s -w`)
/// into this test run's directory, with the machine's Go.
pub fn go_workload(name: &str, ldflags: &str) -> PathBuf {
    go_workload_with(name, None, ldflags)
}

/// [`go_workload`] with a Go toolchain of another version (`go1.18.10`):
/// the go command fetches it once through the module proxy
/// (`GOTOOLCHAIN`) into the module cache, outside the clone.
pub fn go_workload_with(name: &str, toolchain: Option<&str>, ldflags: &str) -> PathBuf {
    let variant = format!(
        "{name}-{}{}",
        toolchain.unwrap_or("local"),
        if ldflags.is_empty() { "" } else { "-stripped" }
    );
    let out = run_dir("go-workloads").join(variant);
    let output = Command::new("go")
        .args(["build", "-ldflags", ldflags, "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata")
                .join(name),
        )
        .env("GOTOOLCHAIN", toolchain.unwrap_or("local"))
        .output()
        .expect("go");
    assert!(
        output.status.success(),
        "go build {name} with {toolchain:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Runs pip as a user would; panics with its output if it fails.
fn pip_install(args: &[&str], target: &Path) {
    let output = Command::new(machine_python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(target)
        .args(args)
        .output()
        .expect("pip");
    assert!(
        output.status.success(),
        "pip install {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Python SDK (`profiler/sdk/python`) installed with pip, once per test
/// run: the directory to put on PYTHONPATH.
pub fn python_trace_sdk() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.as_ref() {
        return dir.clone();
    }
    let dir = run_dir("python-trace-sdk");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/python");
    pip_install(&[sdk.to_str().unwrap()], &dir);
    *built = Some(dir.clone());
    dir
}

/// The OpenTelemetry Python SDK from PyPI, pinned, cached across runs in
/// the target dir.
pub fn python_otel_sdk() -> PathBuf {
    const VERSION: &str = "1.38.0";
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("python-otel-{VERSION}"));
    if !dir.join("opentelemetry/sdk").is_dir() {
        pip_install(&[&format!("opentelemetry-sdk=={VERSION}")], &dir);
    }
    dir
}

/// The C SDK (`profiler/sdk/c`) built as its docs say, and `testdata/NAME.c`
/// linked against it: returns the workload.
pub fn c_trace_workload(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let dir = run_dir("c-trace-sdk");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/c");
    let library = dir.join("libsmolder_trace.so");
    let compile = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("cc").args(args).status().expect("cc");
        assert!(status.success(), "cc {args:?}");
    };
    compile(&[
        "-O2".as_ref(),
        "-fPIC".as_ref(),
        "-shared".as_ref(),
        "-mtls-dialect=gnu2".as_ref(),
        "-o".as_ref(),
        library.as_os_str(),
        sdk.join("smolder_trace.c").as_os_str(),
    ]);
    let out = dir.join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(format!("{name}.c"));
    let include = format!("-I{}", sdk.display());
    let link = format!("-L{}", dir.display());
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    compile(&[
        "-O1".as_ref(),
        "-g".as_ref(),
        "-fno-omit-frame-pointer".as_ref(),
        include.as_ref(),
        source.as_os_str(),
        link.as_ref(),
        "-lsmolder_trace".as_ref(),
        rpath.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    built.push((name.to_owned(), out.clone()));
    out
}

/// A certificate authority made for one test with openssl (EC P-256, valid
/// for a day), and the server certificates it signs.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

impl TestCa {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            ca.path("key").to_str().unwrap(),
            "-out",
            ca.pem().to_str().unwrap(),
        ]);
        ca
    }

    fn path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{}.{what}", self.name))
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> PathBuf {
        self.path("pem")
    }

    /// A server certificate for 127.0.0.1 signed by this CA: (cert, key).
    pub fn server_cert(&self, server: &str) -> (PathBuf, PathBuf) {
        let file = |ext: &str| self.dir.join(format!("{server}.{ext}"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={server}"),
            "-keyout",
            file("key").to_str().unwrap(),
            "-out",
            file("csr").to_str().unwrap(),
        ]);
        std::fs::write(
            file("ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            file("csr").to_str().unwrap(),
            "-CA",
            self.pem().to_str().unwrap(),
            "-CAkey",
            self.path("key").to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            file("ext").to_str().unwrap(),
            "-out",
            file("pem").to_str().unwrap(),
        ]);
        (file("pem"), file("key"))
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CUDA runtime from its PyPI wheel (fetched by `cargo xtask test`).
pub fn libcudart() -> PathBuf {
    let path = std::env::var_os("SMOLDER_CUDART")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(
                Path::new(&home)
                    .join(".cache/smolder/wheel-nvidia-cuda-runtime-cu12-12.9.79/libcudart.so.12"),
            )
        })
        .expect("HOME");
    assert!(
        path.is_file(),
        "no libcudart at {}: run `cargo xtask test` (it fetches it from PyPI) or set SMOLDER_CUDART",
        path.display()
    );
    path
}
