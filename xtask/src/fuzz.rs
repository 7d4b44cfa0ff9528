//! `cargo xtask fuzz`: the parsers of outside input under libFuzzer, on
//! stable Rust. The targets (`profiler/fuzz/`) are built with coverage
//! instrumentation (`-Cpasses=sancov-module`, the flags cargo-fuzz passes;
//! no nightly needed without a sanitizer) plus debug assertions and
//! overflow checks, so an overflow is a crash too. Each run starts from a
//! corpus kept outside the clone (`~/.cache/smolder/fuzz/TARGET`), seeds
//! made from real files of this machine, and every input that once crashed
//! (`profiler/fuzz/regressions/TARGET`, replayed by the unit tests too).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::pyroscope::cache_root;
use crate::util::{run, workspace_root};

/// Every target, in the order they run.
pub const TARGETS: [&str; 11] = [
    "proc_maps",
    "perf_map",
    "cgroup",
    "process_info",
    "spool_request",
    "python_tables",
    "python_objects",
    "thread_context",
    "gopclntab",
    "elf_symbols",
    "eh_frame",
];

const HOST: &str = "x86_64-unknown-linux-gnu";

const USAGE: &str = "cargo xtask fuzz [--seconds N] [TARGET...]

  --seconds N   time per target (default 60)
  TARGET        one or more of proc_maps, perf_map, cgroup, process_info,
                spool_request, python_tables, python_objects, thread_context,
                gopclntab, elf_symbols, eh_frame (default: all)

Crashes are written to target/fuzz/artifacts/ and fail the run; add each,
once fixed, to profiler/fuzz/regressions/TARGET/.";

pub fn run_command(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let mut seconds = 60;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--seconds" {
            let text = it.next().context("--seconds needs a value")?;
            seconds = text.parse().with_context(|| format!("--seconds {text}"))?;
        } else if TARGETS.contains(&arg.as_str()) {
            targets.push(arg.clone());
        } else {
            bail!("unknown fuzz argument `{arg}`\n\n{USAGE}");
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let report = fuzz(&targets, Duration::from_secs(seconds))?;
    print!("{report}");
    Ok(())
}

/// Builds the targets, then runs each for `each`; the report, or an error
/// naming the crashes.
pub fn fuzz(targets: &[String], each: Duration) -> Result<String> {
    let started = Instant::now();
    let binaries = build()?;
    let artifacts = workspace_root().join("target/fuzz/artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let mut report = String::new();
    let mut crashed = Vec::new();
    writeln!(
        report,
        "fuzz: {} targets, {} s each (built in {:.0} s)",
        targets.len(),
        each.as_secs(),
        started.elapsed().as_secs_f64()
    )?;
    for target in targets {
        let corpus = cache_root().join("fuzz").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = seeds(target)?;
        let regressions = workspace_root()
            .join("profiler/fuzz/regressions")
            .join(target);
        let prefix = artifacts.join(format!("{target}-"));
        let mut command = Command::new(binaries.join(target));
        command
            .arg(&corpus)
            .arg(&seeds)
            .arg(format!("-max_total_time={}", each.as_secs()))
            .arg(format!("-artifact_prefix={}", prefix.display()))
            .arg("-print_final_stats=1")
            // Seconds without progress before an input counts as a hang.
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048");
        if regressions.is_dir() {
            command.arg(&regressions);
        }
        eprintln!("fuzzing {target} for {} s", each.as_secs());
        let out = command
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| {
            log.lines()
                .filter_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .next_back()
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| "?".into())
        };
        let inputs = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
        writeln!(
            report,
            "  {target:<14} {:>10} runs, {:>6}/s, corpus {inputs} inputs: {}",
            stat("number_of_executed_units"),
            stat("average_exec_per_sec"),
            if out.status.success() { "ok" } else { "CRASH" }
        )?;
        if !out.status.success() {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("panicked") || l.contains("ERROR") || l.contains("Test unit written")
                })
                .collect();
            crashed.push(format!("{target}:\n    {}", lines.join("\n    ")));
        }
    }
    writeln!(
        report,
        "fuzz: {:.0} s in all",
        started.elapsed().as_secs_f64()
    )?;
    if !crashed.is_empty() {
        bail!("{report}fuzz targets crashed:\n  {}", crashed.join("\n  "));
    }
    Ok(report)
}

/// Builds every target; the directory holding the binaries.
fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target/fuzz");
    let flags = [
        "--cfg fuzzing",
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
    ]
    .join(" ");
    // With --target, RUSTFLAGS reach the targets' code and not build
    // scripts (which must not be instrumented).
    run(Command::new(env!("CARGO"))
        .args(["build", "--release", "--bins", "--target", HOST])
        .arg("--manifest-path")
        .arg(root.join("profiler/fuzz/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", flags))?;
    Ok(target_dir.join(HOST).join("release"))
}

/// Seeds for `target` from real files of this machine, made once into
/// `~/.cache/smolder/fuzz-seeds/TARGET`.
fn seeds(target: &str) -> Result<PathBuf> {
    let dir = cache_root().join("fuzz-seeds").join(target);
    if dir.is_dir() && std::fs::read_dir(&dir)?.next().is_some() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)?;
    let copy = |from: &Path, name: &str| -> Result<()> {
        let data = std::fs::read(from).with_context(|| format!("seed {}", from.display()))?;
        std::fs::write(dir.join(name), data)?;
        Ok(())
    };
    match target {
        "proc_maps" => {
            copy(Path::new("/proc/self/maps"), "self")?;
            copy(Path::new("/proc/1/maps"), "init")?;
        }
        "cgroup" => {
            copy(Path::new("/proc/self/cgroup"), "self")?;
            copy(Path::new("/proc/1/cgroup"), "init")?;
        }
        "process_info" => process_info_seeds(&dir)?,
        "spool_request" => spool_request_seed(&dir)?,
        "python_objects" => {
            // An empty image per layout (the first byte picks it); the
            // fuzzer finds the type words the objects must carry.
            for layout in 0..3u8 {
                let mut image = vec![0u8; 4096];
                image[0] = layout;
                std::fs::write(dir.join(format!("layout-{layout}")), image)?;
            }
        }
        "thread_context" => thread_context_seeds(&dir)?,
        "perf_map" => perf_map_seed(&dir)?,
        "python_tables" => python_seeds(&dir)?,
        "gopclntab" => gopclntab_seed(&dir)?,
        "elf_symbols" | "eh_frame" => {
            // Small real ELF files: an executable and a shared library.
            copy(Path::new("/usr/bin/true"), "true")?;
            copy(
                Path::new("/usr/lib/x86_64-linux-gnu/libdl.so.2"),
                "libdl.so.2",
            )?;
        }
        other => bail!("no seeds for {other}"),
    }
    Ok(dir)
}

/// This process's cmdline, cgroup and executable, and an interpreter's
/// under Kubernetes with OpenTelemetry variables in its environment, as
/// the target reads them (separated by 0xff).
fn process_info_seeds(dir: &Path) -> Result<()> {
    let mut own = std::fs::read("/proc/self/cmdline")?;
    own.push(0xff);
    own.extend(std::fs::read("/proc/self/cgroup")?);
    own.push(0xff);
    own.extend(
        std::fs::read_link("/proc/self/exe")?
            .to_string_lossy()
            .as_bytes(),
    );
    std::fs::write(dir.join("self"), own)?;
    let pod = b"python3\0-X\0dev\0/srv/app/serve.py\0--port\08000\0\xff0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f6a_7b8c_9d0e_1f2a3b4c5d6e.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n\xff/usr/bin/python3.11\xffHOME=/root\0OTEL_SERVICE_NAME=inference-api\0OTEL_RESOURCE_ATTRIBUTES=service.version=1.2.3,vcs.repository.url.full=https%3A%2F%2Fgithub.com%2Facme%2Fapi,vcs.ref.head.revision=abc123\0";
    std::fs::write(dir.join("pod"), pod)?;
    Ok(())
}

/// A push request as the agent spools it: one series named by
/// `service_name`, one gzipped sample (hand-encoded protobuf).
fn spool_request_seed(dir: &Path) -> Result<()> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag << 3 | 2];
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
        out
    }
    let gzip = Command::new("gzip")
        .args(["-c", "/etc/os-release"])
        .output()
        .context("gzip (for a spool seed)")?
        .stdout;
    let label = [field(1, b"service_name"), field(2, b"seed")].concat();
    let sample = [
        field(1, &gzip),
        field(2, b"0f0e0d0c-0b0a-0908-0706-050403020100"),
    ]
    .concat();
    let series = [field(1, &label), field(2, &sample)].concat();
    std::fs::write(dir.join("request"), field(1, &series))?;
    Ok(())
}

/// Libraries and an executable that define `otel_thread_ctx_v1`, reached
/// by each TLS access model the locator knows.
fn thread_context_seeds(dir: &Path) -> Result<()> {
    let build = tempfile_dir()?;
    let source = build.join("ctx.c");
    std::fs::write(
        &source,
        "__thread void *otel_thread_ctx_v1;\nvoid *get(void) { return otel_thread_ctx_v1; }\nint main(void) { return get() != 0; }\n",
    )?;
    for (name, flags) in [
        ("general-dynamic.so", &["-shared", "-fPIC"][..]),
        (
            "descriptor.so",
            &["-shared", "-fPIC", "-mtls-dialect=gnu2"][..],
        ),
        (
            "initial-exec.so",
            &["-shared", "-fPIC", "-ftls-model=initial-exec"][..],
        ),
        ("local-exec", &[][..]),
    ] {
        run(Command::new("cc")
            .args(["-O1", "-o"])
            .arg(dir.join(name))
            .args(flags)
            .arg(&source))?;
    }
    let _ = std::fs::remove_dir_all(&build);
    Ok(())
}

/// A perf map as Node writes it (`--perf-basic-prof`), first 400 lines.
/// Only Node's own map is read and removed.
fn perf_map_seed(dir: &Path) -> Result<()> {
    let mut child = Command::new("node")
        .args([
            "--perf-basic-prof",
            "-e",
            "let s = 0; for (let i = 0; i < 3e6; i++) s += Math.sqrt(i); console.log(s)",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("node (for a perf map seed)")?;
    let map = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    let status = child.wait()?;
    if !status.success() {
        bail!("node (for a perf map seed) failed: {status}");
    }
    let text = std::fs::read_to_string(&map).with_context(|| format!("{}", map.display()))?;
    let _ = std::fs::remove_file(&map);
    let head: Vec<&str> = text.lines().take(400).collect();
    std::fs::write(dir.join("node"), head.join("\n"))?;
    Ok(())
}

/// Line tables of real code objects: the machine's CPython (3.11+
/// locations) and Debian's 3.9 (lnotab) when its root is built; each as
/// the target reads it (format, first line, an offset, the table).
fn python_seeds(dir: &Path) -> Result<()> {
    const SCRIPT: &str = r#"
import json, sys, threading
fmt = 0 if sys.version_info < (3, 10) else 1 if sys.version_info < (3, 11) else 2
out = []
for f in (threading.Thread.run, threading.Thread.start, json.dumps, json.loads):
    c = f.__code__
    table = c.co_lnotab if fmt == 0 else c.co_linetable
    out.append((bytes([fmt]) + c.co_firstlineno.to_bytes(4, "little")
                + (len(c.co_code) // 2).to_bytes(4, "little") + table).hex())
print("\n".join(out))
"#;
    let mut interpreters = vec![vec!["python3".to_string()]];
    let root = cache_root().join("debian-bullseye-python3.9");
    if root.join("usr/bin/python3.9").is_file() {
        interpreters.push(vec![
            "chroot".into(),
            root.display().to_string(),
            "python3.9".into(),
        ]);
    }
    for (n, argv) in interpreters.iter().enumerate() {
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-c", SCRIPT])
            .output()
            .context("python (for line table seeds)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        for (i, hex) in text.lines().enumerate() {
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|j| u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).ok())
                .collect();
            std::fs::write(dir.join(format!("code-{n}-{i}")), bytes)?;
        }
    }
    Ok(())
}

/// `.gopclntab` of a real Go binary (testdata/gochain, built with the
/// machine's Go), after the 8-byte `.text` address the target reads first.
fn gopclntab_seed(dir: &Path) -> Result<()> {
    let build = tempfile_dir()?;
    let binary = build.join("gochain");
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(workspace_root().join("testdata/gochain")))?;
    let section = build.join("gopclntab");
    run(Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.gopclntab"])
        .arg(&binary)
        .arg(&section))?;
    let headers = Command::new("readelf").arg("-SW").arg(&binary).output()?;
    let text = String::from_utf8_lossy(&headers.stdout);
    let address = text
        .lines()
        .find(|l| l.contains(" .text "))
        .and_then(|l| {
            let after = l.split(" .text ").nth(1)?;
            let fields: Vec<&str> = after.split_whitespace().collect();
            u64::from_str_radix(fields.get(1)?, 16).ok()
        })
        .context("no .text in readelf's output")?;
    let mut seed = address.to_le_bytes().to_vec();
    seed.extend(std::fs::read(&section)?);
    std::fs::write(dir.join("gochain"), seed)?;
    let _ = std::fs::remove_dir_all(&build);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("smolder-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
