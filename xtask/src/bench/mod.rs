//! `cargo xtask bench`: smolder next to its peers, measured in the same run.
//! Prints medians and ratios; see docs/benchmarks.md for how to read them.

pub(crate) mod agent;
mod cuda;
mod offcpu;
mod overhead;
mod python;
mod pytorch;
mod rusage;
mod symbolizer;
mod trace;
mod unwind;

use anyhow::{bail, Context, Result};

use crate::{setup, util};

pub struct Options {
    pub seconds: u64,
    pub runs: usize,
    /// Run only this benchmark (`symbolizer`, `overhead`, `offcpu`, `agent`, `unwind`, `python`,
    /// `trace`, `pytorch`, `cuda`).
    pub only: Option<String>,
}

const BENCHMARKS: [&str; 9] = [
    "symbolizer",
    "overhead",
    "offcpu",
    "agent",
    "unwind",
    "python",
    "trace",
    "pytorch",
    "cuda",
];

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == name)
    }
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: 30,
        runs: 3,
        only: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--only" {
            let name = it.next().context("--only needs a benchmark name")?;
            if !BENCHMARKS.contains(&name.as_str()) {
                bail!("unknown benchmark `{name}` (one of {BENCHMARKS:?})");
            }
            options.only = Some(name.clone());
            continue;
        }
        let mut value = || -> Result<u64> {
            let text = it.next().with_context(|| format!("{arg} needs a value"))?;
            text.parse()
                .with_context(|| format!("{arg} {text}: not a number"))
        };
        match arg.as_str() {
            "--seconds" => options.seconds = value()?,
            "--runs" => options.runs = value()? as usize,
            other => bail!("unknown bench option `{other}`"),
        }
    }
    if options.runs == 0 || options.seconds == 0 {
        bail!("--runs and --seconds must be positive");
    }
    Ok(options)
}

const USAGE: &str = "cargo xtask bench [--only NAME] [--seconds N] [--runs N]

  --only NAME    one benchmark: symbolizer, overhead, offcpu, agent, unwind,
                 python, trace, pytorch or cuda (default: all)
  --seconds N    measured window of the timed benchmarks (default 30)
  --runs N       runs per benchmark; medians are reported (default 3)";

pub fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let options = parse(args)?;
    setup::setup()?;
    util::cargo(&[
        "build",
        "--release",
        "-p",
        "smolder",
        "-p",
        "symbolizer",
        "--examples",
        "--bins",
    ])?;
    util::cargo(&["build", "-p", "smolder"])?; // the large debug binary the symbolizer bench reads
    let mut reports = Vec::new();
    if options.wants("symbolizer") {
        reports.push(symbolizer::measure()?.to_string());
        reports.push(symbolizer::measure_go()?.to_string());
    }
    if options.wants("overhead") {
        reports.push(overhead::measure(&options)?.to_string());
    }
    if options.wants("offcpu") {
        reports.push(offcpu::measure(&options)?.to_string());
    }
    if options.wants("agent") {
        reports.push(agent::measure(&options)?.to_string());
    }
    if options.wants("unwind") {
        reports.push(unwind::measure(&options)?.to_string());
    }
    if options.wants("python") {
        reports.push(python::measure(&options)?.to_string());
    }
    if options.wants("trace") {
        reports.push(trace::measure(&options)?.to_string());
    }
    if options.wants("pytorch") {
        reports.push(pytorch::measure(&options)?.to_string());
    }
    if options.wants("cuda") {
        reports.push(cuda::measure(&options)?.to_string());
    }
    println!();
    for report in reports {
        println!("{report}");
    }
    Ok(())
}

/// From smolder record's summary: the sampler program's BPF run time in ns
/// ("BPF sampler: N runs, T ns total", with --bpf-stats).
pub fn summary_bpf_ns(stderr: &str) -> Option<f64> {
    stderr.lines().find_map(|l| {
        l.strip_prefix("BPF sampler: ")?
            .split(", ")
            .nth(1)?
            .strip_suffix(" ns total")?
            .parse()
            .ok()
    })
}

/// From smolder record's summary: the samples written ("Wrote N samples ...").
pub fn summary_samples(stderr: &str) -> Option<f64> {
    stderr.lines().find_map(|l| {
        l.strip_prefix("Wrote ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn reads_smolder_summaries() {
        let text = "Wrote 297 samples from 1 processes over 3.0s to x\nBPF sampler: 5004 runs, 14930000 ns total\n";
        assert_eq!(summary_samples(text), Some(297.0));
        assert_eq!(summary_bpf_ns(text), Some(14_930_000.0));
        assert_eq!(summary_bpf_ns("nothing"), None);
    }

    #[test]
    fn parses_bench_options() {
        let args: Vec<String> = ["--seconds", "5", "--runs", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse(&args).unwrap();
        assert_eq!((o.seconds, o.runs), (5, 2));
        assert!(parse(&["--runs".to_string()]).is_err());
        assert!(parse(&["--bogus".to_string()]).is_err());
        let only = parse(&["--only".to_string(), "offcpu".to_string()]).unwrap();
        assert!(only.wants("offcpu") && !only.wants("overhead"));
        assert!(parse(&["--only".to_string(), "nope".to_string()]).is_err());
    }
}
