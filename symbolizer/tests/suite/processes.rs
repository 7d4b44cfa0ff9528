//! Live processes: mappings captured while they run, binaries deleted under
//! them, processes that exit before symbolization, perf maps, kernel symbols.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use symbolizer::{
    FrameAddress, KernelSymbols, RegionKind, Resolution, Symbolizer, SymbolizerConfig,
};

use crate::build::compile;

/// True when running as root. Without root these tests cannot run: in CI that
/// is a failure, elsewhere a loud skip.
pub fn is_root(why: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    if uid.split_whitespace().nth(1) == Some("0") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run as root ({why})"
    );
    eprintln!("SKIPPED: needs root ({why})");
    false
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn deleted_binary_of_an_exited_process_still_resolves() {
    if !is_root("/proc/PID/map_files") {
        return;
    }
    let (_dir, bin) = compile(
        "clang-19",
        "chain.c",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
        "chain-deleted",
    );
    let mut child = Command::new(&bin)
        .args(["30", "print-address"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let spin = u64::from_str_radix(line.trim().trim_start_matches("0x"), 16).unwrap();
    std::fs::remove_file(&bin).unwrap();

    let mut s = Symbolizer::new(SymbolizerConfig::default());
    let maps = s.snapshot_process(child.id()).unwrap();
    let mut child = Killed(child);
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(!Path::new(&format!("/proc/{}", child.0.id())).exists());

    let located = s.symbolize_user(&maps, &[FrameAddress::InstructionPointer(spin + 1)]);
    let region = located[0].region.as_ref().expect("in a mapping");
    let RegionKind::Module(module) = &region.kind else {
        panic!("not a file mapping: {region:?}")
    };
    assert!(module.path.ends_with("chain-deleted"));
    assert_eq!(
        module.build_id.as_ref().map(|b| b.to_string().len()),
        Some(40)
    );
    match &located[0].resolution {
        Resolution::Symbols(frames) => {
            assert_eq!(frames[0].name, "spin");
            assert!(frames[0].file.as_deref().unwrap().ends_with("chain.c"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn perf_map_names_jit_code_and_skips_garbage() {
    let child = Killed(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.0.id();
    let path = format!("/tmp/perf-{pid}.map");
    std::fs::write(
        &path,
        "10000 100 jitted_handler\nthis line is garbage\n10100 zz bad size\n10200 80 LazyCompile:*fib /app/fib.js:3\n",
    )
    .unwrap();
    let mut s = Symbolizer::new(SymbolizerConfig::default());
    let maps = s.snapshot_process(pid).unwrap();
    let addresses = [
        FrameAddress::InstructionPointer(0x10010),
        FrameAddress::ReturnAddress(0x10250),
        FrameAddress::InstructionPointer(0x10300),
    ];
    let located = s.symbolize_user(&maps, &addresses);
    std::fs::remove_file(&path).unwrap();
    let name = |i: usize| match &located[i].resolution {
        Resolution::Symbols(f) => Some(f[0].name.clone()),
        Resolution::Unknown(_) => None,
    };
    assert_eq!(name(0).as_deref(), Some("jitted_handler"));
    assert_eq!(name(1).as_deref(), Some("LazyCompile:*fib /app/fib.js:3"));
    assert_eq!(name(2), None);
    assert_eq!(s.stats().rejected_lines, 2);
}

#[test]
fn exited_pid_is_a_clear_error() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let err = Symbolizer::new(SymbolizerConfig::default())
        .snapshot_process(pid)
        .unwrap_err();
    assert!(err.to_string().contains(&pid.to_string()), "{err}");
}

#[test]
fn kernel_symbols_name_kernel_functions() {
    if !is_root("/proc/kallsyms addresses") {
        return;
    }
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let vfs_read = text
        .lines()
        .find_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p.len() >= 3 && p[2] == "vfs_read").then(|| u64::from_str_radix(p[0], 16).unwrap())
        })
        .expect("vfs_read in kallsyms");
    let symbols = KernelSymbols::load(Path::new("/proc/kallsyms")).unwrap();
    assert_eq!(symbols.lookup(vfs_read + 8).unwrap().name, "vfs_read");
    let mut s = Symbolizer::new(SymbolizerConfig::default());
    let resolved = s.symbolize_kernel(&[FrameAddress::ReturnAddress(vfs_read + 9)]);
    assert!(matches!(&resolved[0].0, Resolution::Symbols(f) if f[0].name == "vfs_read"));
}

fn first_name(located: &[symbolizer::UserLocation]) -> Option<String> {
    match &located[0].resolution {
        Resolution::Symbols(f) => Some(f[0].name.clone()),
        Resolution::Unknown(_) => None,
    }
}

#[test]
fn perf_map_older_than_its_process_is_ignored() {
    let child = Killed(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.0.id();
    let path = format!("/tmp/perf-{pid}.map");
    std::fs::write(&path, "10000 100 left_by_an_earlier_process\n").unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();

    let mut s = Symbolizer::new(SymbolizerConfig::default());
    let maps = s.snapshot_process(pid).unwrap();
    let started = maps.started.expect("start time from /proc");
    let age = std::time::SystemTime::now()
        .duration_since(started)
        .unwrap();
    assert!(
        age < std::time::Duration::from_secs(60),
        "started {age:?} ago"
    );
    let located = s.symbolize_user(&maps, &[FrameAddress::InstructionPointer(0x10010)]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(first_name(&located), None);
    assert_eq!(s.stats().stale_perf_maps, 1);
}

#[test]
fn perf_map_is_read_again_when_the_jit_appends() {
    let child = Killed(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.0.id();
    let path = format!("/tmp/perf-{pid}.map");
    std::fs::write(&path, "10000 100 compiled_first\n").unwrap();
    let mut s = Symbolizer::new(SymbolizerConfig::default());
    let maps = s.snapshot_process(pid).unwrap();
    let first = s.symbolize_user(&maps, &[FrameAddress::InstructionPointer(0x10010)]);
    let before = s.symbolize_user(&maps, &[FrameAddress::InstructionPointer(0x20010)]);
    {
        use std::io::Write;
        let mut file = std::fs::File::options().append(true).open(&path).unwrap();
        writeln!(file, "20000 100 compiled_later").unwrap();
    }
    let after = s.symbolize_user(&maps, &[FrameAddress::InstructionPointer(0x20010)]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(first_name(&first).as_deref(), Some("compiled_first"));
    assert_eq!(first_name(&before), None);
    assert_eq!(first_name(&after).as_deref(), Some("compiled_later"));
}
