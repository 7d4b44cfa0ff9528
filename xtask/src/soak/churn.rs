//! The soak's workloads (testdata/soak): two long-lived anchors (a Python
//! spinner, and a C process that loads and unloads libraries all the
//! time) and a stream of short-lived C, Python and Go processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::util::{die_with_parent, run, workspace_root};

/// Copies of the soak library under distinct names: files the agent sees
/// mapped, unmapped, and mapped again.
const LIBRARY_COPIES: usize = 32;
/// A short-lived process starts this often.
const START_EVERY: Duration = Duration::from_millis(250);
/// How long each short-lived process spins.
const CHILD_SPIN_MS: u32 = 60;

pub struct Workloads {
    churn: PathBuf,
    go: PathBuf,
    python: PathBuf,
    libraries: Vec<PathBuf>,
    dir: PathBuf,
}

impl Workloads {
    /// Builds the C and Go programs into `dir`.
    pub fn build(dir: &Path) -> Result<Self> {
        let source = workspace_root().join("testdata/soak");
        std::fs::create_dir_all(dir)?;
        let library = dir.join("libsoak.so");
        run(Command::new("cc")
            .args([
                "-O2",
                "-g",
                "-fno-omit-frame-pointer",
                "-shared",
                "-fPIC",
                "-o",
            ])
            .arg(&library)
            .arg(source.join("lib.c")))?;
        let mut libraries = Vec::new();
        for n in 0..LIBRARY_COPIES {
            let copy = dir.join(format!("libsoak-{n:02}.so"));
            std::fs::copy(&library, &copy)?;
            libraries.push(copy);
        }
        let churn = dir.join("soak_churn");
        run(Command::new("cc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&churn)
            .arg(source.join("churn.c"))
            .arg("-ldl"))?;
        let go = dir.join("soak_go");
        run(Command::new("go")
            .args(["build", "-o"])
            .arg(&go)
            .arg(".")
            .current_dir(source.join("go"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod"))?;
        Ok(Self {
            churn,
            go,
            python: source,
            libraries,
            dir: dir.to_owned(),
        })
    }

    /// The long-lived processes; killed when the returned guard drops.
    pub fn start_anchors(&self) -> Result<Children> {
        let python = die_with_parent(&mut Command::new("python3"))
            .arg(self.python.join("soak_anchor.py"))
            .stdout(Stdio::null())
            .spawn()?;
        let loader = die_with_parent(&mut Command::new(&self.churn))
            .args(["10", "90", "0"])
            .args(&self.libraries)
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Children(vec![python, loader]))
    }

    /// The `count`th short-lived process: C (loading two of the library
    /// copies, a different pair each time), Python and Go in turn.
    fn command(&self, count: usize) -> Command {
        let spin = CHILD_SPIN_MS.to_string();
        let mut command = match count % 3 {
            0 => {
                let mut c = Command::new(&self.churn);
                c.args([spin.as_str(), "0", "2"])
                    .arg(&self.libraries[count % LIBRARY_COPIES])
                    .arg(&self.libraries[(count / 3 + 7) % LIBRARY_COPIES]);
                c
            }
            1 => {
                let mut c = Command::new("python3");
                c.arg(self.python.join("soak_child.py")).arg(&spin);
                c
            }
            _ => {
                let mut c = Command::new(&self.go);
                c.arg(&spin);
                c
            }
        };
        die_with_parent(&mut command)
            .stdout(Stdio::null())
            .current_dir(&self.dir);
        command
    }

    /// Starts short-lived processes until the churn is dropped.
    pub fn start_churn(self: &Arc<Self>) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, n, f, workloads) = (stop.clone(), started.clone(), failed.clone(), self.clone());
        let thread = std::thread::spawn(move || {
            let mut running: Vec<Child> = Vec::new();
            let mut count = 0usize;
            while !s.load(Ordering::Relaxed) {
                match workloads.command(count).spawn() {
                    Ok(child) => {
                        running.push(child);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                running.retain_mut(|child| match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            f.fetch_add(1, Ordering::Relaxed);
                        }
                        false
                    }
                    Ok(None) => true,
                    Err(_) => false,
                });
                count += 1;
                std::thread::sleep(START_EVERY);
            }
            for mut child in running {
                let _ = child.kill();
                let _ = child.wait();
            }
        });
        Churn {
            stop,
            started,
            failed,
            thread: Some(thread),
        }
    }
}

/// Children killed on drop.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Churn {
    stop: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Churn {
    /// Processes started, and those that failed to start or exited non-zero.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
