//! `cargo xtask bench`: smolder next to its peers, measured in the same run.
//! Prints medians and ratios; see docs/benchmarks.md for how to read them.

mod overhead;
mod rusage;
mod symbolizer;

use anyhow::{bail, Context, Result};

use crate::{setup, util};

pub struct Options {
    pub seconds: u64,
    pub runs: usize,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: 30,
        runs: 3,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
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

pub fn run(args: &[String]) -> Result<()> {
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
    let symbolizer = symbolizer::measure()?;
    let overhead = overhead::measure(&options)?;
    println!();
    println!("{symbolizer}");
    println!("{overhead}");
    Ok(())
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
    fn parses_bench_options() {
        let args: Vec<String> = ["--seconds", "5", "--runs", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse(&args).unwrap();
        assert_eq!((o.seconds, o.runs), (5, 2));
        assert!(parse(&["--runs".to_string()]).is_err());
        assert!(parse(&["--bogus".to_string()]).is_err());
    }
}
