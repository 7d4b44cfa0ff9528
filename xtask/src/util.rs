//! Running commands and finding the workspace.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs a command with inherited output; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and captures its output; fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(workspace_root()))
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// What `cargo test` reported, added up over every test binary.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestTotals {
    pub passed: u64,
    pub failed: u64,
    pub success: bool,
    /// Each test's wall time, as seen from its result line.
    pub durations: Vec<(String, std::time::Duration)>,
}

impl TestTotals {
    /// The `n` slowest tests, slowest first.
    pub fn slowest(&self, n: usize) -> Vec<(String, std::time::Duration)> {
        let mut all = self.durations.clone();
        all.sort_by_key(|d| std::cmp::Reverse(d.1));
        all.truncate(n);
        all
    }
}

/// The name in `test NAME ... ok` (or FAILED, ignored); None for other lines.
fn test_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("test ")?;
    let (name, _) = rest.split_once(" ... ")?;
    Some(name)
}

/// Adds `test result: ok. 9 passed; 1 failed; ...` to the totals.
fn add_result_line(line: &str, totals: &mut TestTotals) {
    let Some(rest) = line.strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(['.', ';']) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(what)) = (words.next(), words.next()) {
            match (n.parse::<u64>(), what) {
                (Ok(n), "passed") => totals.passed += n,
                (Ok(n), "failed") => totals.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, passing its output through, and adds up the results.
pub fn cargo_test(args: &[&str]) -> Result<TestTotals> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("+ {cargo} {}", args.join(" "));
    let mut child = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut totals = TestTotals::default();
    // Tests run one at a time (`--test-threads=1`): a test took the time
    // from the previous result line (or its binary's `running N tests`) to
    // its own.
    let mut since = std::time::Instant::now();
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        println!("{line}");
        add_result_line(&line, &mut totals);
        if let Some(name) = test_name(&line) {
            totals.durations.push((name.to_owned(), since.elapsed()));
            since = std::time::Instant::now();
        } else if line.starts_with("running ") {
            since = std::time::Instant::now();
        }
    }
    totals.success = child.wait()?.success();
    Ok(totals)
}

/// Makes `command`'s process receive SIGTERM when the thread that started
/// it exits, so that nothing is left running if xtask is killed.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Set by SIGINT or SIGTERM once `catch_interrupts` ran.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Turns SIGINT and SIGTERM into `INTERRUPTED`, so that a long run stops
/// at its next check and its guards clean up.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_cargo_test_result_lines() {
        let mut t = TestTotals::default();
        add_result_line("test result: ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s", &mut t);
        add_result_line(
            "test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            &mut t,
        );
        add_result_line("running 3 tests", &mut t);
        assert_eq!((t.passed, t.failed), (14, 1));
    }

    #[test]
    fn test_names_come_from_result_lines() {
        assert_eq!(test_name("test agent::x ... ok"), Some("agent::x"));
        assert_eq!(test_name("test a::b ... FAILED"), Some("a::b"));
        assert_eq!(test_name("test result: ok. 1 passed"), None);
        assert_eq!(test_name("running 3 tests"), None);
    }
}
