//! ELF files on disk: symbol tables, DWARF with inlined functions, debug
//! links, build-id directories, and broken files.

use std::path::Path;
use std::process::Command;

use symbolizer::{Resolution, Symbolizer, SymbolizerConfig, UnknownReason};

use crate::build::{addr2line, compile, run, symbol, TruthFrame};

fn symbolizer() -> Symbolizer {
    Symbolizer::new(SymbolizerConfig::default())
}

fn frames(resolution: &Resolution) -> Vec<TruthFrame> {
    match resolution {
        Resolution::Symbols(frames) => frames
            .iter()
            .map(|f| TruthFrame {
                function: f.name.clone(),
                file: f
                    .file
                    .as_deref()
                    .and_then(|p| Path::new(p).file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                line: f.line.unwrap_or(0),
            })
            .collect(),
        Resolution::Unknown(_) => Vec::new(),
    }
}

const CHAIN: &[&str] = &["spin", "a", "b", "c", "main"];

#[test]
fn symtab_only_binary_gives_exact_names_without_lines() {
    let (_dir, bin) = compile("gcc", "chain.c", &["-O1"], "chain-symtab");
    let mut s = symbolizer();
    for name in CHAIN {
        let (address, size) = symbol(&bin, name);
        let resolved = s.symbolize_elf_file(&bin, &[address, address + size / 2]);
        for r in &resolved {
            match r {
                Resolution::Symbols(f) => {
                    assert_eq!(f.len(), 1, "{name}: {f:?}");
                    assert_eq!(f[0].name, *name);
                    assert_eq!(f[0].file, None, "no debug info, no file");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

#[test]
fn dwarf_inlined_frames_match_addr2line() {
    let (_dir, bin) = compile("gcc", "inline.c", &["-O2", "-g"], "inline");
    let (start, size) = symbol(&bin, "outer");
    let addresses: Vec<u64> = (start..start + size).collect();
    let truth = addr2line(&bin, &addresses);
    let ours: Vec<Vec<TruthFrame>> = symbolizer()
        .symbolize_elf_file(&bin, &addresses)
        .iter()
        .map(frames)
        .collect();
    assert_eq!(truth.len(), ours.len());
    let matching = truth.iter().zip(&ours).filter(|(t, o)| t == o).count();
    let mismatches: Vec<_> = truth
        .iter()
        .zip(&ours)
        .zip(&addresses)
        .filter(|((t, o), _)| t != o)
        .take(3)
        .collect();
    assert_eq!(
        matching,
        addresses.len(),
        "addresses that differ from addr2line: {mismatches:#?}"
    );
    let deepest = ours.iter().map(Vec::len).max().unwrap_or(0);
    assert_eq!(
        deepest, 3,
        "inner and middle must appear inlined into outer"
    );
    let chain = ours.iter().find(|f| f.len() == 3).unwrap();
    let names: Vec<&str> = chain.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(names, ["inner", "middle", "outer"]);
    assert!(chain.iter().all(|f| f.file == "inline.c" && f.line > 0));
}

/// Strips `bin` completely and links it to a separate debug file.
fn split_debug_info(bin: &Path, debug: &Path) {
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(bin)
        .arg(debug));
    run(Command::new("strip").arg("--strip-all").arg(bin));
    let link = format!("--add-gnu-debuglink={}", debug.display());
    run(Command::new("objcopy")
        .arg(link)
        .arg(bin)
        .current_dir(bin.parent().unwrap()));
}

#[test]
fn stripped_binary_resolves_through_its_debuglink() {
    let (dir, bin) = compile("gcc", "chain.c", &["-O1", "-g"], "chain");
    let (address, _) = symbol(&bin, "spin");
    let truth = addr2line(&bin, &[address + 4]);
    split_debug_info(&bin, &dir.path().join("chain.debug"));
    assert!(crate::build::nm(&bin).is_empty(), "binary must be stripped");
    let ours = frames(&symbolizer().symbolize_elf_file(&bin, &[address + 4])[0]);
    assert_eq!(ours, truth[0]);
    assert_eq!(ours[0].function, "spin");
    assert_eq!(ours[0].file, "chain.c");
}

#[test]
fn stripped_binary_resolves_through_the_build_id_directory() {
    if !crate::processes::is_root("writing /usr/lib/debug/.build-id") {
        return;
    }
    let (dir, bin) = compile(
        "gcc",
        "chain.c",
        &["-O1", "-g", "-Wl,--build-id=sha1"],
        "chain-bid",
    );
    let (address, _) = symbol(&bin, "b");
    let truth = addr2line(&bin, &[address + 1]);
    let debug = dir.path().join("chain-bid.debug");
    split_debug_info(&bin, &debug);
    // Only the build-id path has the debug file.
    let build_id = blazesym::helper::read_elf_build_id(&bin)
        .unwrap()
        .expect("build id")
        .to_vec();
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    let target_dir = Path::new("/usr/lib/debug/.build-id").join(&hex[..2]);
    std::fs::create_dir_all(&target_dir).unwrap();
    let target = target_dir.join(format!("{}.debug", &hex[2..]));
    std::fs::rename(&debug, &target)
        .or_else(|_| std::fs::copy(&debug, &target).map(|_| ()))
        .unwrap();
    let ours = frames(&symbolizer().symbolize_elf_file(&bin, &[address + 1])[0]);
    std::fs::remove_file(&target).unwrap();
    assert_eq!(ours, truth[0]);
    assert_eq!(ours[0].function, "b");
}

#[test]
fn truncated_and_garbage_files_are_unknown_not_fatal() {
    let (dir, bin) = compile("gcc", "chain.c", &["-O1", "-g"], "chain");
    let (address, _) = symbol(&bin, "spin");
    let bytes = std::fs::read(&bin).unwrap();
    let mut s = symbolizer();
    for (name, content) in [
        ("truncated-third", &bytes[..bytes.len() / 3]),
        ("truncated-header", &bytes[..100]),
        ("not-elf", b"this is not an ELF file\n".as_slice()),
        ("empty", b"".as_slice()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let resolved = s.symbolize_elf_file(&path, &[address, address + 1]);
        assert_eq!(resolved.len(), 2, "{name}");
        for r in resolved {
            assert!(matches!(r, Resolution::Unknown(_)), "{name}: {r:?}");
        }
    }
    assert!(s.stats().bad_modules >= 1);
    // The intact file still resolves: one broken module loses nothing else.
    let good = s.symbolize_elf_file(&bin, &[address]);
    assert_eq!(frames(&good[0])[0].function, "spin");
    let missing = s.symbolize_elf_file(&dir.path().join("does-not-exist"), &[address]);
    assert_eq!(missing[0], Resolution::Unknown(UnknownReason::BadModule));
}
