//! Occupancy of the agent's hash maps: entries counted with the bpf(2)
//! syscall (BPF_MAP_GET_NEXT_KEY), the maps found by name through bpftool.

use std::process::Command;

use anyhow::{Context, Result};

use crate::util::output;

/// The agent's maps that hold one entry per process, thread, file or stack
/// (profiler-ebpf/src), as bpftool names them (15 characters at most).
const MAPS: [&str; 13] = [
    "unwind_files",
    "unwind_processe",
    "exec_mappings",
    "mmap_calls",
    "python_processe",
    "python_threads",
    "trace_processes",
    "targets",
    "offcpu_start",
    "offcpu_totals",
    "offcpu_stacks",
    "offcpu_user_sta",
    "offcpu_python_s",
];

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;

/// One map: (name, entries, max_entries).
pub type Occupancy = (String, u64, u64);

/// Every map of the list that exists now.
pub fn occupancy() -> Result<Vec<Occupancy>> {
    let out = output(Command::new("bpftool").args(["map", "show", "--json"]))?;
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut found = Vec::new();
    for map in maps.as_array().into_iter().flatten() {
        let name = map["name"].as_str().unwrap_or("");
        let kind = map["type"].as_str().unwrap_or("");
        // Per-CPU scratch arrays share the truncated names of some.
        if !MAPS.contains(&name) || kind.ends_with("array") {
            continue;
        }
        let id = map["id"].as_u64().context("map id")? as u32;
        let key_size = map["bytes_key"].as_u64().context("key size")? as usize;
        let max = map["max_entries"].as_u64().unwrap_or(0);
        // A map freed between the listing and now is skipped.
        if let Ok(entries) = count_entries(id, key_size) {
            found.push((name.to_owned(), entries, max));
        }
    }
    found.sort();
    Ok(found)
}

#[repr(C)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
struct NextKey {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a live, properly laid out bpf_attr prefix of the
    // size passed; the kernel reads no further.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) }
}

fn count_entries(id: u32, key_size: usize) -> std::io::Result<u64> {
    let mut by_id = GetFdById {
        id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = bpf(BPF_MAP_GET_FD_BY_ID, &mut by_id);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut entries = 0;
    let mut first = true;
    loop {
        let mut attr = NextKey {
            map_fd: fd as u32,
            _pad: 0,
            // A null key asks for the first one.
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        if bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) != 0 {
            break;
        }
        first = false;
        entries += 1;
        std::mem::swap(&mut key, &mut next);
    }
    // SAFETY: closing the descriptor this function opened.
    unsafe { libc::close(fd as i32) };
    Ok(entries)
}
