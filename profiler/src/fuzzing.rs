//! Entry points for the fuzz targets (`profiler/fuzz/`, built with
//! `--cfg fuzzing` by `cargo xtask fuzz`): each runs one parser of outside
//! input on arbitrary bytes. A panic, an overflow or an endless loop is a
//! bug; an error is the expected answer. The symbolizer's parsers have
//! their own (`symbolizer::fuzzing`).

/// An ELF file's `.eh_frame` (and `.debug_frame`) turned into unwind rows,
/// then lookups across the table.
pub fn eh_frame(data: &[u8]) {
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
