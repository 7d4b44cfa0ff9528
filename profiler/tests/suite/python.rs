//! Python stacks from real CPython processes: the machine's pyenv build
//! (shared libpython) and Debian's python3.11 (static), multi-threaded pure
//! Python, Python calling a C extension, a process that exits mid-capture;
//! checked against py-spy from PyPI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{
    is_root, machine_python, read_pprof, record_pid, share, smolder_ok, Running, Stack,
};

pub(crate) const CHAIN: &[&str] = &["main", "handle_request", "model_step", "tokenize"];
/// Debian's CPython package (installed by `cargo xtask setup`).
const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";

pub(crate) fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/python")
        .join(name)
}

/// Starts a Python workload and lets it import and reach its loop.
fn start(python: &Path, script: &str, args: &[&str], env: &[(&str, &Path)]) -> Running {
    let mut command = Command::new(python);
    command
        .arg(testdata(script))
        .args(args)
        .stdout(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    Running::spawn(&mut command, Duration::from_millis(500))
}

fn record(pid: u32, seconds: u32) -> (Vec<Stack>, String) {
    record_pid(pid, seconds, &[])
}

/// Line numbers of the lines of `script` containing `needle`.
fn lines_with(script: &str, needle: &str) -> Vec<i64> {
    std::fs::read_to_string(testdata(script))
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i as i64 + 1)
        .collect()
}

/// Whether the stack has CHAIN with each frame in chain.py at the line of
/// its call (tokenize: inside its loop).
pub(crate) fn chain_with_lines(s: &Stack, expected: &HashMap<&str, Vec<i64>>) -> bool {
    let Some(start) = s
        .frames
        .windows(CHAIN.len())
        .position(|w| w.iter().zip(CHAIN).all(|(f, c)| f == c))
    else {
        return false;
    };
    CHAIN.iter().enumerate().all(|(i, name)| {
        let (file, line) = &s.sources[start + i];
        file.ends_with("testdata/python/chain.py") && expected[name].contains(line)
    })
}

pub(crate) fn expected_lines() -> HashMap<&'static str, Vec<i64>> {
    let mut tokenize = lines_with("chain.py", "for ch in text:");
    tokenize.extend(lines_with("chain.py", "total = (total * 31"));
    HashMap::from([
        ("main", lines_with("chain.py", "        handle_request(n)")),
        (
            "handle_request",
            lines_with("chain.py", "return model_step("),
        ),
        (
            "model_step",
            lines_with("chain.py", "acc += tokenize(text)"),
        ),
        ("tokenize", tokenize),
    ])
}

/// The chain workload on `python`, started before smolder: ≥90% of its
/// samples show main -> handle_request -> model_step -> tokenize with the
/// right files and lines, in all three threads.
fn chain_is_complete(python: &Path) {
    let running = start(python, "chain.py", &["8", "2"], &[]);
    let (stacks, stderr) = record(running.pid(), 3);
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    assert!(total >= 150, "only {total} samples\n{stderr}");
    let expected = expected_lines();
    let complete = share(&stacks, |s| chain_with_lines(s, &expected));
    let example: Vec<String> = stacks
        .iter()
        .take(3)
        .map(|s| format!("{:?} {:?}", s.frames, s.sources))
        .collect();
    assert!(
        complete >= 0.90,
        "{:.1}% of samples show the chain with files and lines; expected {expected:?}; e.g. {example:#?}\n{stderr}",
        complete * 100.0
    );
    let mut threads: Vec<u32> = stacks
        .iter()
        .filter(|s| s.contains(CHAIN))
        .map(|s| s.tid)
        .collect();
    threads.sort_unstable();
    threads.dedup();
    assert_eq!(threads.len(), 3, "threads with the chain: {threads:?}");
    // Worker threads start in threading's bootstrap, the main one in <module>.
    assert!(stacks.iter().any(|s| s.contains(&["Thread.run", "main"])));
    assert!(stacks.iter().any(|s| s.contains(&["<module>", "main"])));
    assert!(stderr.contains("python: 1 interpreters walked"), "{stderr}");
}

#[test]
fn python_chain_is_complete_on_the_machines_cpython() {
    if !is_root() {
        return;
    }
    chain_is_complete(&machine_python());
}

#[test]
fn python_chain_is_complete_on_debians_python3_11() {
    if !is_root() {
        return;
    }
    assert!(
        Path::new(DEBIAN_PYTHON).exists(),
        "{DEBIAN_PYTHON} missing: run `cargo xtask setup`"
    );
    chain_is_complete(Path::new(DEBIAN_PYTHON));
}

/// Builds spin_ext.c for `python` into `dir`.
fn build_extension(python: &Path, dir: &Path) {
    let query = |code: &str| {
        let out = Command::new(python).args(["-c", code]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let include = query("import sysconfig; print(sysconfig.get_paths()['include'])");
    let suffix = query("import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))");
    let status = Command::new("gcc")
        .args(["-O1", "-fno-inline", "-shared", "-fPIC", "-g"])
        .arg(format!("-I{include}"))
        .arg(testdata("spin_ext.c"))
        .arg("-o")
        .arg(dir.join(format!("spin_ext{suffix}")))
        .status()
        .unwrap();
    assert!(status.success(), "building spin_ext");
}

#[test]
fn python_calling_a_c_extension_shows_the_python_caller_then_the_c_functions() {
    if !is_root() {
        return;
    }
    let python = machine_python();
    let dir = tempfile::tempdir().unwrap();
    build_extension(&python, dir.path());
    let running = start(&python, "mixed.py", &["8"], &[("PYTHONPATH", dir.path())]);
    let (stacks, stderr) = record(running.pid(), 3);
    assert_mixed(&stacks, &stderr);
}

/// ≥90% of mixed.py's samples show python_loop -> call_extension -> spin
/// (the C function Python called) -> spin_c -> spin_leaf, and the
/// interpreter's call machinery between them is hidden.
pub(crate) fn assert_mixed(stacks: &[Stack], stderr: &str) {
    let mixed = share(stacks, |s| {
        s.contains(&[
            "python_loop",
            "call_extension",
            "spin",
            "spin_c",
            "spin_leaf",
        ])
    });
    let example: Vec<&Vec<String>> = stacks.iter().take(3).map(|s| &s.frames).collect();
    eprintln!(
        "python -> C extension: {:.1}% of samples whole",
        mixed * 100.0
    );
    assert!(
        mixed >= 0.90,
        "{:.1}% of samples show python_loop;call_extension;spin;spin_c;spin_leaf; e.g. {example:#?}\n{stderr}",
        mixed * 100.0
    );
    let machinery = share(stacks, |s| {
        s.frames.iter().any(|f| f.starts_with("_PyEval_EvalFrame"))
    });
    assert!(
        machinery < 0.05,
        "{:.1}% still show the eval loop",
        machinery * 100.0
    );
}

#[test]
fn python_process_exiting_mid_capture_keeps_its_python_frames() {
    if !is_root() {
        return;
    }
    let running = start(&machine_python(), "chain.py", &["2", "1"], &[]);
    // Longer than the process lives: the capture ends when it exits.
    let (stacks, stderr) = record(running.pid(), 10);
    assert!(
        stderr.contains("every target process has exited"),
        "{stderr}"
    );
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    assert!(total >= 50, "only {total} samples\n{stderr}");
    let complete = share(&stacks, |s| s.contains(CHAIN));
    assert!(
        complete >= 0.85,
        "{:.1}% show the chain\n{stderr}",
        complete * 100.0
    );
    let unreadable = share(&stacks, |s| {
        s.frames.iter().any(|f| f.starts_with("[python code"))
    });
    assert!(
        unreadable < 0.05,
        "{:.1}% have unreadable code objects",
        unreadable * 100.0
    );
}

#[test]
fn python_started_by_smolder_is_walked_from_its_first_second() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pb.gz");
    let python = machine_python();
    let script = testdata("chain.py");
    let stderr = smolder_ok(&[
        "record",
        "-o",
        out.to_str().unwrap(),
        "--",
        python.to_str().unwrap(),
        script.to_str().unwrap(),
        "2",
        "1",
    ]);
    let (_, stacks) = read_pprof(&out);
    let complete = share(&stacks, |s| s.contains(CHAIN));
    assert!(
        complete >= 0.85,
        "{:.1}% show the chain\n{stderr}",
        complete * 100.0
    );
}

/// py-spy's raw output: "frame;frame;... count", frames "name (file:line)".
fn py_spy_functions(text: &str) -> (HashMap<String, u64>, u64) {
    let mut inclusive: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for line in text.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        total += count;
        let mut names: Vec<String> = stack
            .split(';')
            .map(|f| f.split(" (").next().unwrap_or(f).to_owned())
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            *inclusive.entry(name).or_default() += count;
        }
    }
    (inclusive, total)
}

/// Our Python functions (frames in a .py file), by name (both tools use
/// co_qualname from 3.11 on).
fn our_functions(stacks: &[Stack]) -> (HashMap<String, u64>, u64) {
    let mut inclusive: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for s in stacks {
        let mut names: Vec<String> = s
            .frames
            .iter()
            .zip(&s.sources)
            .filter(|(_, (file, _))| file.ends_with(".py"))
            .map(|(f, _)| f.clone())
            .collect();
        if names.is_empty() {
            continue;
        }
        total += s.count;
        names.sort();
        names.dedup();
        for name in names {
            *inclusive.entry(name).or_default() += s.count;
        }
    }
    (inclusive, total)
}

fn py_spy() -> PathBuf {
    let path = std::env::var_os("SMOLDER_PY_SPY")
        .map(PathBuf::from)
        .or_else(|| {
            Some(
                Path::new(&std::env::var_os("HOME")?)
                    .join(".cache/smolder/wheel-py-spy-0.4.3/py-spy"),
            )
        })
        .expect("HOME");
    assert!(
        path.is_file(),
        "no py-spy at {}: run `cargo xtask test` (it fetches it from PyPI) or set SMOLDER_PY_SPY",
        path.display()
    );
    path
}

#[test]
fn python_top_functions_agree_with_py_spy() {
    if !is_root() {
        return;
    }
    let running = start(&machine_python(), "chain.py", &["10", "2"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("py-spy.txt");
    let spy = Command::new(py_spy())
        .args([
            "record",
            "-r",
            "99",
            "-d",
            "4",
            "-f",
            "raw",
            "--nonblocking",
            "-o",
        ])
        .arg(&raw)
        .args(["--pid", &running.pid().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stacks, stderr) = record(running.pid(), 4);
    let spy: Output = spy.wait_with_output().unwrap();
    assert!(
        spy.status.success(),
        "py-spy: {}",
        String::from_utf8_lossy(&spy.stderr)
    );
    let (theirs, their_total) = py_spy_functions(&std::fs::read_to_string(&raw).unwrap());
    let (ours, our_total) = our_functions(&stacks);
    assert!(
        their_total >= 100 && our_total >= 100,
        "samples: py-spy {their_total}, smolder {our_total}\n{stderr}"
    );
    let shares = |m: &HashMap<String, u64>, total: u64| -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = m
            .iter()
            .map(|(k, &c)| (k.clone(), c as f64 / total as f64))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let their_shares = shares(&theirs, their_total);
    let our_shares: HashMap<String, f64> = shares(&ours, our_total).into_iter().collect();
    let top: Vec<_> = their_shares.iter().take(10).collect();
    assert!(top.len() >= 6, "py-spy saw only {top:?}");
    for (name, theirs) in &top {
        let ours = our_shares.get(name).copied().unwrap_or(0.0);
        eprintln!(
            "{name}: smolder {:.1}%, py-spy {:.1}%",
            ours * 100.0,
            theirs * 100.0
        );
        assert!(
            (ours - theirs).abs() <= 0.10,
            "{name}: smolder {:.1}%, py-spy {:.1}%\npy-spy top: {top:?}\nours: {our_shares:?}",
            ours * 100.0,
            theirs * 100.0
        );
    }
}
