//! Builds workloads, runs the smolder binary, reads its pprof output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;

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
}

impl Stack {
    /// Whether `chain` appears in the stack, contiguous and in order.
    pub fn contains(&self, chain: &[&str]) -> bool {
        self.frames
            .windows(chain.len())
            .any(|w| w.iter().zip(chain).all(|(f, c)| f == c))
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
                nanos: sample.value[1] as u64,
                user_leaf,
                user_frames,
                sources,
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
pub struct Running(Child);

impl Running {
    /// Spawns `command` and gives it `settle` to load its libraries and reach
    /// its loop.
    pub fn spawn(command: &mut Command, settle: std::time::Duration) -> Self {
        let child = command.spawn().expect("workload");
        std::thread::sleep(settle);
        Self(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
