//! Builds the OpenTelemetry eBPF profiler (the agent benchmark's peer) from
//! the Go module proxy, once, into `~/.cache/smolder/`.
//!
//! `go install go.opentelemetry.io/ebpf-profiler@TAG` fails here: the proxy
//! has no version list for the module (404), so go's deprecation check falls
//! back to fetching go.opentelemetry.io directly, which is unreachable; the
//! checksum database has no entry for the tag either. The module zip itself
//! is on the proxy: download it, copy it and build it like Pyroscope.
//!
//! Two patches, so that it runs here at all; nothing else is changed:
//! - it raises RLIMIT_MEMLOCK to infinity before loading BPF and treats
//!   failure as fatal, but these machines refuse that (no CAP_SYS_RESOURCE;
//!   the kernel charges BPF memory to the cgroup anyway, see
//!   ../shared/ENVIRONMENT.md). The patched `rlimit.MaximizeMemlock` keeps
//!   the limit when raising it is refused, which is what smolder does.
//! - it attaches a kprobe to `bpf_ksym_add` to notice new BPF JIT symbols,
//!   fatally, and this kernel is built without CONFIG_KPROBES. The patch
//!   logs the failure and goes on, as upstream already does on kernels
//!   older than 5.8. Only kernel symbols of BPF programs loaded later are
//!   affected; sampling and unwinding are not.

use anyhow::{bail, Result};
use std::path::PathBuf;

use crate::pyroscope::{cache_root, copy_tree, download_with, go_build};

pub const VERSION: &str = "v0.0.202610";
const MODULE: &str = "go.opentelemetry.io/ebpf-profiler";

/// The cached profiler binary, built first if missing (about a minute).
pub fn ensure() -> Result<PathBuf> {
    let dir = cache_root().join(format!("ebpf-profiler-{VERSION}"));
    let binary = dir.join("ebpf-profiler");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "building the OpenTelemetry eBPF profiler {VERSION} into {}",
        dir.display()
    );
    let env = [
        ("GOPROXY", "https://proxy.golang.org"),
        ("GONOSUMDB", MODULE),
    ];
    let module = download_with(&format!("{MODULE}@{VERSION}"), &env)?;
    let src = dir.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    copy_tree(&module, &src)?;
    std::fs::write(src.join("rlimit/rlimit.go"), RLIMIT_PATCHED)?;
    patch(
        &src.join("tracer/tracer.go"),
        r#"return fmt.Errorf("failed opening kprobe for kallsyms trigger: %s", err)"#,
        r#"log.Warnf("no kallsyms trigger (smolder bench patch): %s", err); return nil"#,
    )?;
    go_build(&src, &binary, &[], ".", &env)?;
    Ok(binary)
}

/// Replaces `old` (which must occur exactly once) in a source file.
fn patch(path: &std::path::Path, old: &str, new: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    if text.matches(old).count() != 1 {
        bail!(
            "{} changed upstream: cannot apply the bench patch",
            path.display()
        );
    }
    std::fs::write(path, text.replace(old, new))?;
    Ok(())
}

/// `rlimit/rlimit.go` with the refusal tolerated.
const RLIMIT_PATCHED: &str = r#"// Copyright The OpenTelemetry Authors
// SPDX-License-Identifier: Apache-2.0
// Patched by smolder's xtask: a refused raise keeps the current limit.

package rlimit // import "go.opentelemetry.io/ebpf-profiler/rlimit"

import (
	"golang.org/x/sys/unix"

	"go.opentelemetry.io/ebpf-profiler/internal/log"
)

func MaximizeMemlock() (func(), error) {
	var oldLimit unix.Rlimit
	tmpLimit := unix.Rlimit{
		Cur: unix.RLIM_INFINITY,
		Max: unix.RLIM_INFINITY,
	}
	if err := unix.Prlimit(0, unix.RLIMIT_MEMLOCK, &tmpLimit, &oldLimit); err != nil {
		return func() {}, nil
	}
	return func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &oldLimit); err != nil {
			log.Fatalf("Failed to set old rlimit: %v", err)
		}
	}, nil
}
"#;
