//! What to profile: every process, some pids, or a command smolder starts.

use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};

use crate::collect::{LoadError, Sampler, SamplerTargets};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    All,
    Pids(Vec<u32>),
    /// argv of a command to start; it and its children are profiled.
    Command(Vec<OsString>),
}

impl TargetSpec {
    pub fn sampler_targets(&self) -> SamplerTargets {
        match self {
            Self::All => SamplerTargets::All,
            Self::Pids(_) => SamplerTargets::Listed {
                follow_children: false,
            },
            Self::Command(_) => SamplerTargets::Listed {
                follow_children: true,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register the target with the sampler")]
    Sampler(#[from] LoadError),
}

/// A command started by smolder.
pub struct Launched {
    child: Child,
}

impl Launched {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the command to exit (SIGTERM) if it still runs: the capture that
    /// started it is over. Waits at most two seconds; a command that ignores
    /// SIGTERM is left running, with a warning, rather than stalling smolder.
    pub fn terminate(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain syscall on a pid we own and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tracing::warn!(
            "command (pid {}) ignored SIGTERM and is still running",
            self.pid()
        );
    }

    /// `Some(status)` once the command has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Starts `argv` so that it and every process it forks are sampled from their
/// first instruction. The sampler must already be started: while the command
/// is spawned smolder lists itself as a target, so the BPF fork hook adds the
/// child before it execs (smolder itself is never sampled).
pub fn launch(argv: &[OsString], sampler: &mut Sampler) -> Result<Launched, TargetError> {
    let (program, args) = argv.split_first().expect("clap requires a command");
    let self_pid = std::process::id();
    sampler.add_target(self_pid)?;
    let spawned = Command::new(program).args(args).spawn();
    sampler.remove_target(self_pid)?;
    let child = spawned.map_err(|source| TargetError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    // Also covers a kernel without the fork hook firing for some reason.
    sampler.add_target(child.id())?;
    Ok(Launched { child })
}
