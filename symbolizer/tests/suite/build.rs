//! Builds test binaries from `testdata/` and runs the ground-truth tools.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// Compiles `source` with `compiler` and `flags` into a fresh directory.
pub fn compile(
    compiler: &str,
    source: &str,
    flags: &[&str],
    out_name: &str,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join(out_name);
    run(Command::new(compiler)
        .args(flags)
        .arg(testdata(source))
        .arg("-o")
        .arg(&out));
    (dir, out)
}

pub fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// `nm -S` text symbols: name -> (address, size).
pub fn nm(binary: &Path) -> Vec<(String, u64, u64)> {
    run(Command::new("nm")
        .arg("-S")
        .arg("--defined-only")
        .arg(binary))
    .lines()
    .filter_map(|line| {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            [addr, size, kind, name] if kind.eq_ignore_ascii_case("t") => Some((
                name.to_string(),
                u64::from_str_radix(addr, 16).ok()?,
                u64::from_str_radix(size, 16).ok()?,
            )),
            _ => None,
        }
    })
    .collect()
}

pub fn symbol(binary: &Path, name: &str) -> (u64, u64) {
    nm(binary)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, a, s)| (a, s))
        .unwrap_or_else(|| panic!("{name} not in {}", binary.display()))
}

/// One frame as addr2line prints it: (function, file name, line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

/// `addr2line -f -i -e BINARY ADDR...`: frames per address, innermost first.
pub fn addr2line(binary: &Path, addresses: &[u64]) -> Vec<Vec<TruthFrame>> {
    // -a prints each address first, which splits the inline chains apart.
    let mut cmd = Command::new("addr2line");
    cmd.args(["-a", "-f", "-i", "-e"]).arg(binary);
    for a in addresses {
        cmd.arg(format!("{a:#x}"));
    }
    let text = run(&mut cmd);
    let mut out: Vec<Vec<TruthFrame>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") {
            out.push(Vec::new());
            continue;
        }
        let function = line.to_string();
        let location = lines.next().unwrap_or_default();
        let (file, line_no) = location.rsplit_once(':').unwrap_or((location, "0"));
        let line_no = line_no
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        out.last_mut()
            .expect("address line first")
            .push(TruthFrame {
                function,
                file: Path::new(file)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                line: line_no,
            });
    }
    out
}
