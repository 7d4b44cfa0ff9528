//! CPython 3.9 to 3.15 as Debian builds them, each run inside a minimal
//! Debian root (built by `cargo xtask test` with debootstrap, cached outside
//! the clone) with chroot: to smolder, a process in another mount namespace
//! with its own interpreter, libc and paths, as in another distribution's
//! container. Debian's 3.14 and 3.15 are stripped and their eval loop is
//! split by the compiler; 3.9's interpreter is a non-PIE executable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{is_root, read_pprof, record_pid, share, smolder_ok, Running, Stack};
use crate::python::{assert_mixed, chain_with_lines, expected_lines, testdata};

/// Where the workloads sit inside each root: the same path suffix as in the
/// clone, so that file names read `.../testdata/python/chain.py`.
const IN_ROOT: &str = "smolder-tests/testdata/python";
/// The workloads copied into each root.
const SCRIPTS: [&str; 3] = ["chain.py", "waits.py", "mixed.py"];
/// Where the C extension is built inside a root.
const EXTENSION_DIR: &str = "smolder-tests/ext";

/// The root holding Debian's `package` from `suite`, with the workloads
/// copied in.
pub(crate) fn root(suite: &str, package: &str) -> PathBuf {
    let roots = std::env::var_os("SMOLDER_PYTHON_ROOTS")
        .map(PathBuf::from)
        .unwrap_or_default();
    let root = roots.join(format!("debian-{suite}-{package}"));
    assert!(
        root.join("usr/bin").join(package).is_file(),
        "no {package} root at {}: run `cargo xtask test` (it builds the Debian roots) or set SMOLDER_PYTHON_ROOTS",
        root.display()
    );
    let dir = root.join(IN_ROOT);
    std::fs::create_dir_all(&dir).unwrap();
    for script in SCRIPTS {
        std::fs::copy(testdata(script), dir.join(script)).unwrap();
    }
    root
}

/// `chroot ROOT PACKAGE SCRIPT ARGS...`, the script one of SCRIPTS.
pub(crate) fn chroot(root: &Path, package: &str, script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("chroot");
    command
        .arg(root)
        .arg(package)
        .arg(format!("/{IN_ROOT}/{script}"))
        .args(args);
    command
}

/// How the chain looks in a sample: its share with files and lines.
fn complete_share(stacks: &[Stack]) -> f64 {
    let expected = expected_lines();
    share(stacks, |s| chain_with_lines(s, &expected))
}

fn examples(stacks: &[Stack]) -> Vec<String> {
    stacks
        .iter()
        .take(3)
        .map(|s| format!("{:?} {:?}", s.frames, s.sources))
        .collect()
}

/// Debian's `package` from `suite`, in its root: started before smolder
/// (two worker threads and the main one) and started by smolder, at least
/// 90% of the samples show main -> handle_request -> model_step -> tokenize
/// with chain.py's files and lines.
fn chain_is_complete(suite: &str, package: &str) {
    let root = root(suite, package);

    let running = Running::spawn(
        chroot(&root, package, "chain.py", &["8", "2"]).stdout(Stdio::null()),
        Duration::from_millis(500),
    );
    let (stacks, stderr) = record_pid(running.pid(), 3, &[]);
    drop(running);
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    assert!(total >= 150, "only {total} samples\n{stderr}");
    let before = complete_share(&stacks);
    assert!(
        before >= 0.90,
        "{package}, started before smolder: {:.1}% of samples show the chain with files and lines; e.g. {:#?}\n{stderr}",
        before * 100.0,
        examples(&stacks)
    );
    assert!(stderr.contains("python: 1 interpreters walked"), "{stderr}");
    // Worker threads start in threading's bootstrap (`run` before 3.11,
    // which has no qualified names), the main thread in <module>.
    assert!(
        stacks
            .iter()
            .any(|s| s.contains(&["Thread.run", "main"]) || s.contains(&["run", "main"])),
        "no worker thread: {:#?}",
        examples(&stacks)
    );
    assert!(stacks.iter().any(|s| s.contains(&["<module>", "main"])));

    // Started by smolder: caught while its interpreter starts, walked once
    // it is ready.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pb.gz");
    let command = chroot(&root, package, "chain.py", &["5", "1"]);
    let mut args = vec!["record", "-o", out.to_str().unwrap(), "--"];
    let argv: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.extend(argv.iter().map(String::as_str));
    let stderr = smolder_ok(&args);
    let (_, stacks) = read_pprof(&out);
    let after = complete_share(&stacks);
    eprintln!(
        "{package}: the chain with files and lines in {:.1}% of samples started before smolder, {:.1}% started by it",
        before * 100.0,
        after * 100.0
    );
    assert!(
        after >= 0.90,
        "{package}, started by smolder: {:.1}% of samples show the chain with files and lines; e.g. {:#?}\n{stderr}",
        after * 100.0,
        examples(&stacks)
    );
}

#[test]
fn python3_9_from_debian_bullseye_is_walked() {
    if is_root() {
        chain_is_complete("bullseye", "python3.9");
    }
}

#[test]
fn python3_11_from_debian_bookworm_is_walked() {
    if is_root() {
        chain_is_complete("bookworm", "python3.11");
    }
}

#[test]
fn python3_13_from_debian_trixie_is_walked() {
    if is_root() {
        chain_is_complete("trixie", "python3.13");
    }
}

#[test]
fn python3_14_from_debian_sid_is_walked() {
    if is_root() {
        chain_is_complete("sid", "python3.14");
    }
}

#[test]
fn python3_15_from_debian_sid_is_walked() {
    if is_root() {
        chain_is_complete("sid", "python3.15");
    }
}

/// testdata/python/spin_ext.c built for the root's interpreter: the host's
/// compiler with the root's headers (Debian's pyconfig.h includes the one in
/// its multiarch directory), into EXTENSION_DIR in the root.
fn build_extension(root: &Path, package: &str) {
    let suffix = chroot_python(root, package)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))",
        ])
        .output()
        .unwrap();
    let suffix = String::from_utf8_lossy(&suffix.stdout).trim().to_owned();
    assert!(
        suffix.ends_with(".so"),
        "EXT_SUFFIX of {package}: {suffix:?}"
    );
    let include = root.join("usr/include");
    assert!(
        include.join(package).join("Python.h").is_file(),
        "no {package} headers in {}: run `cargo xtask test` (it builds the Debian roots)",
        root.display()
    );
    let dir = root.join(EXTENSION_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("gcc")
        .args(["-O1", "-fno-inline", "-shared", "-fPIC", "-g"])
        .arg(format!("-I{}", include.join(package).display()))
        // After the host's own headers: for the multiarch pyconfig.h only.
        .arg("-idirafter")
        .arg(&include)
        .arg(testdata("spin_ext.c"))
        .arg("-o")
        .arg(dir.join(format!("spin_ext{suffix}")))
        .status()
        .unwrap();
    assert!(status.success(), "building spin_ext for {package}");
}

fn chroot_python(root: &Path, package: &str) -> Command {
    let mut command = Command::new("chroot");
    command.arg(root).arg(package);
    command
}

/// Python calling a C extension, in Debian's `package`: the Python caller,
/// then the C functions, with the eval loop's machinery hidden.
fn c_extension_is_walked(suite: &str, package: &str) {
    let root = root(suite, package);
    build_extension(&root, package);
    let mut command = chroot(&root, package, "mixed.py", &["8"]);
    command
        .env("PYTHONPATH", format!("/{EXTENSION_DIR}"))
        .stdout(Stdio::null());
    let running = Running::spawn(&mut command, Duration::from_millis(500));
    let (stacks, stderr) = record_pid(running.pid(), 3, &[]);
    drop(running);
    assert_mixed(&stacks, &stderr);
}

#[test]
fn python3_13_calling_a_c_extension_is_walked() {
    if is_root() {
        c_extension_is_walked("trixie", "python3.13");
    }
}

#[test]
fn python3_14_calling_a_c_extension_is_walked() {
    if is_root() {
        c_extension_is_walked("sid", "python3.14");
    }
}
