//! Symbolizer speed on a large binary, next to `addr2line -f -i`.

use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::util::{output, workspace_root};

/// Picks 2000 function midpoints of `binary` and writes them to `list`, one
/// hex address per line, for the `symbolize_bench` example.
fn write_addresses(binary: &Path, list: &Path) -> Result<Vec<u64>> {
    let picked = addresses(binary, 2000)?;
    std::fs::write(
        list,
        picked
            .iter()
            .map(|a| format!("{a:x}\n"))
            .collect::<String>(),
    )?;
    Ok(picked)
}

/// One run of the `symbolize_bench` example: (cold ms, warm addresses/s, named).
fn symbolize_bench(binary: &Path, list: &Path) -> Result<(f64, f64, usize)> {
    let root = workspace_root();
    let out = output(
        Command::new(root.join("target/release/examples/symbolize_bench"))
            .arg(binary)
            .arg(list),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("{name} missing from symbolize_bench output"))
    };
    Ok((
        field("cold_first_lookup_ms")?,
        field("warm_addresses_per_s")?,
        field("named")? as usize,
    ))
}

/// Go: the same program with a symbol table (`-w`) and with only its
/// pclntab (`-s -w`), and the debuginfod cache-hit path.
pub struct GoReport {
    addresses: usize,
    symtab: (f64, f64, usize),
    pclntab: (f64, f64, usize),
    debuginfod_hit_ns: f64,
}

pub fn measure_go() -> Result<GoReport> {
    let root = workspace_root();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let build = |name: &str, ldflags: &str| -> Result<std::path::PathBuf> {
        let out = dir.join(name);
        crate::util::run(
            Command::new("go")
                .args(["build", "-ldflags", ldflags, "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(root.join("testdata/gochain")),
        )?;
        Ok(out)
    };
    let symtab = build("gochain-symtab", "-w")?;
    let pclntab = build("gochain-stripped", "-s -w")?;
    let list = dir.join("go-addresses.txt");
    let addresses = write_addresses(&symtab, &list)?;
    let hit = output(&mut Command::new(
        root.join("target/release/examples/debuginfod_bench"),
    ))?;
    let debuginfod_hit_ns = String::from_utf8_lossy(&hit.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("cache_hit_ns=")?.parse().ok())
        .context("cache_hit_ns missing from debuginfod_bench output")?;
    Ok(GoReport {
        addresses: addresses.len(),
        symtab: symbolize_bench(&symtab, &list)?,
        pclntab: symbolize_bench(&pclntab, &list)?,
        debuginfod_hit_ns,
    })
}

impl fmt::Display for GoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== Go symbols: {} function midpoints of testdata/gochain ==",
            self.addresses
        )?;
        for (what, (cold, rate, named)) in [
            ("symtab (-w)", self.symtab),
            ("pclntab (-s -w)", self.pclntab),
        ] {
            writeln!(
                f,
                "  {what:<16} cold first lookup {cold:>7.1} ms   warm {rate:>10.0} addresses/s   ({named} named)"
            )?;
        }
        writeln!(
            f,
            "  ratio pclntab/symtab warm throughput: {:.2}x",
            self.pclntab.1 / self.symtab.1
        )?;
        writeln!(
            f,
            "  debuginfod cache hit: {:.1} us per lookup (then kept in memory per build-id)",
            self.debuginfod_hit_ns / 1e3
        )
    }
}

pub struct Report {
    binary_mib: f64,
    addresses: usize,
    ours_cold_ms: f64,
    ours_rate: f64,
    named: usize,
    addr2line_cold_ms: f64,
    addr2line_rate: f64,
}

/// Function midpoints from `nm -S`, spread over the whole binary.
fn addresses(binary: &std::path::Path, count: usize) -> Result<Vec<u64>> {
    let nm = output(
        Command::new("nm")
            .arg("-S")
            .arg("--defined-only")
            .arg(binary),
    )?;
    let text = String::from_utf8_lossy(&nm.stdout);
    let all: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            match p.as_slice() {
                [a, s, k, _] if k.eq_ignore_ascii_case("t") => {
                    let size = u64::from_str_radix(s, 16).ok()?;
                    (size > 1).then(|| u64::from_str_radix(a, 16).ok().map(|a| a + size / 2))?
                }
                _ => None,
            }
        })
        .collect();
    let step = (all.len() / count).max(1);
    Ok(all.into_iter().step_by(step).take(count).collect())
}

fn addr2line(binary: &std::path::Path, addresses: &[u64]) -> Result<f64> {
    let input: String = addresses.iter().map(|a| format!("{a:#x}\n")).collect();
    let start = Instant::now();
    let mut child = Command::new("addr2line")
        .args(["-f", "-i", "-e"])
        .arg(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, input.as_bytes())?;
    child.wait()?;
    Ok(start.elapsed().as_secs_f64())
}

pub fn measure() -> Result<Report> {
    let root = workspace_root();
    let binary = root.join("target/debug/smolder");
    let list = root.join("target/bench-addresses.txt");
    let addresses = write_addresses(&binary, &list)?;
    eprintln!(
        "symbolizer: {} addresses in {}",
        addresses.len(),
        binary.display()
    );

    let (ours_cold_ms, ours_rate, named) = symbolize_bench(&binary, &list)?;
    let mut cold = Vec::new();
    for _ in 0..3 {
        cold.push(addr2line(&binary, &addresses[..1])? * 1e3);
    }
    let mut full = Vec::new();
    for _ in 0..3 {
        full.push(addr2line(&binary, &addresses)?);
    }
    Ok(Report {
        binary_mib: std::fs::metadata(&binary)?.len() as f64 / (1 << 20) as f64,
        addresses: addresses.len(),
        ours_cold_ms,
        ours_rate,
        named,
        addr2line_cold_ms: super::median(&mut cold),
        addr2line_rate: addresses.len() as f64 / super::median(&mut full),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== symbolizer: {} addresses in target/debug/smolder ({:.0} MiB, DWARF) ==",
            self.addresses, self.binary_mib
        )?;
        writeln!(f, "  smolder   cold first lookup {:>9.1} ms   warm {:>10.0} addresses/s   ({} of {} named)", self.ours_cold_ms, self.ours_rate, self.named, self.addresses)?;
        writeln!(f, "  addr2line cold first lookup {:>9.1} ms   all  {:>10.0} addresses/s (one process, parse included)", self.addr2line_cold_ms, self.addr2line_rate)?;
        writeln!(
            f,
            "  ratio smolder/addr2line: cold {:.2}x time, throughput {:.1}x",
            self.ours_cold_ms / self.addr2line_cold_ms,
            self.ours_rate / self.addr2line_rate
        )
    }
}
