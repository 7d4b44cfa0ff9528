//! Entry points for the fuzz targets (`profiler/fuzz/`, built with
//! `--cfg fuzzing` by `cargo xtask fuzz`): each runs one parser of outside
//! input on arbitrary bytes. A panic, an overflow or an endless loop is a
//! bug; an error is the expected answer. The symbolizer's parsers have
//! their own (`symbolizer::fuzzing`).

/// An ELF file's `.eh_frame` (and `.debug_frame`) turned into unwind rows,
/// then lookups across the table; and the CUDA entry points of its dynamic
/// symbols, as the probes look for them.
pub fn eh_frame(data: &[u8]) {
    use crate::collect::{entry_points_in, CudaLibrary};
    for library in [CudaLibrary::Runtime, CudaLibrary::Driver] {
        let _ = entry_points_in(data, library);
    }
    let Ok(info) = crate::unwind::parse_elf(data) else {
        return;
    };
    let table = &info.table;
    for step in 0..64u64 {
        let _ = table.rule_at(table.base.wrapping_add(step * 0x100));
    }
    for address in [0, u64::MAX] {
        let _ = table.rule_at(address);
    }
}

/// `/proc/PID/cgroup` text: the path the agent keeps, and the container
/// and pod it names.
pub fn cgroup(text: &str) {
    let path = crate::agent::process_info::cgroup_path(text);
    let _ = crate::agent::process_info::container_of(&path);
}

/// What the agent reads of a process (`cmdline` bytes, `cgroup` text, the
/// executable's path and `environ` bytes, separated by 0xff bytes), then
/// the service named from it.
pub fn process_info(data: &[u8]) {
    use crate::agent::process_info::{cgroup_path, container_of, parse_cmdline, ProcessInfo};
    let mut parts = data.splitn(4, |&b| b == 0xff);
    let cmdline = parse_cmdline(parts.next().unwrap_or_default());
    let cgroup = cgroup_path(&String::from_utf8_lossy(parts.next().unwrap_or_default()));
    let exe = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let otel = crate::agent::otel_resource::from_environ(parts.next().unwrap_or_default());
    let info = ProcessInfo {
        pid: 1,
        comm: exe.rsplit('/').next().unwrap_or_default().to_owned(),
        exe,
        cmdline,
        container: container_of(&cgroup),
        cgroup,
        kubernetes: None,
        otel,
        process_context: false,
    };
    let _ = crate::agent::infer_service(&info);
    // The same bytes as another process's memory holding an OTEL_CTX
    // mapping at 0x1000, and as its maps.
    let _ = crate::agent::process_context::find_mapping(&String::from_utf8_lossy(data));
    let memory = |at: u64, buf: &mut [u8]| {
        let start = at.wrapping_sub(0x1000) as usize;
        match data.get(start..start.saturating_add(buf.len())) {
            Some(bytes) if bytes.len() == buf.len() => {
                buf.copy_from_slice(bytes);
                true
            }
            _ => false,
        }
    };
    let _ = crate::agent::process_context::read_at(memory, 0x1000);
}

/// A request read back from the spool (Pyroscope push or OTLP), checked
/// before replay.
pub fn spool_request(data: &[u8]) {
    let _ = crate::export::push_proto::check_spooled(data);
    let _ = crate::export::otlp::check_spooled(data);
}

/// Replays every input the fuzz targets once crashed on (kept in
/// `profiler/fuzz/regressions/TARGET/`).
#[cfg(test)]
mod regressions {
    #[test]
    fn crashes_found_by_fuzzing_stay_fixed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        for (target, run) in [
            ("eh_frame", super::eh_frame as fn(&[u8])),
            ("cgroup", |data: &[u8]| {
                super::cgroup(&String::from_utf8_lossy(data))
            }),
            ("process_info", super::process_info),
            ("spool_request", super::spool_request),
        ] {
            let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
                continue;
            };
            for entry in entries {
                run(&std::fs::read(entry.unwrap().path()).unwrap());
            }
        }
    }
}
