//! CPU time and peak RSS of one child process, from wait4.

use std::process::Child;
use std::time::Duration;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    pub max_rss_kib: u64,
    pub success: bool,
}

/// Waits for `child` (spawned with a piped stderr) and returns its usage and
/// everything it wrote to stderr.
pub fn wait_with_stderr(mut child: Child) -> Result<(Usage, String)> {
    let mut pipe = child
        .stderr
        .take()
        .context("child spawned without a piped stderr")?;
    // Read on a thread: a full pipe would otherwise block the child forever.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    let usage = wait(child)?;
    Ok((usage, reader.join().unwrap_or_default()))
}

/// Waits for `child` and returns what it (and the children it waited for) used.
pub fn wait(child: Child) -> Result<Usage> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; the pid is our unreaped child.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("wait4({pid}) failed: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Usage {
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    })
}
