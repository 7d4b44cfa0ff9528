//! A stripped binary whose debug file only a real debuginfod (elfutils) on
//! 127.0.0.1 has; then the same with the server down.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, is_root, read_pprof, share, smolder_with_env};

const CHAIN: &[&str] = &["main", "a", "b", "c", "spin"];

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}");
}

#[test]
fn debug_info_comes_from_debuginfod_and_its_absence_loses_nothing() {
    if !is_root() {
        return;
    }
    // debuginfod does not scan hidden directories such as tempfile's `.tmpXXXX`.
    let dir = tempfile::Builder::new()
        .prefix("smolder-debuginfod-")
        .tempdir()
        .unwrap();
    let (bin_dir, debug_dir) = (dir.path().join("bin"), dir.path().join("debug"));
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&debug_dir).unwrap();
    let bin = bin_dir.join("chain");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/chain.c");
    run(Command::new("clang-19")
        .args([
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-Wl,--build-id=sha1",
        ])
        .arg(&source)
        .arg("-o")
        .arg(&bin));
    // The debug file goes only to the server; the binary keeps no symbols
    // and no debug link.
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(debug_dir.join("chain.debug")));
    run(Command::new("strip").arg("--strip-all").arg(&bin));

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let server = Server(
        Command::new("debuginfod")
            .arg("-F")
            .arg(&debug_dir)
            .args(["-p", &port.to_string(), "-d"])
            .arg(dir.path().join("db.sqlite"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("debuginfod.log")).unwrap())
            .spawn()
            .expect("debuginfod (elfutils)"),
    );
    // Ready once it has indexed the debug file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let build_id = build_id_of(&bin);
    // debuginfod-find caches a miss for ten minutes: a fresh cache per try.
    for attempt in 0.. {
        let found = Command::new("debuginfod-find")
            .args(["debuginfo", &build_id])
            .env("DEBUGINFOD_URLS", &url)
            .env(
                "DEBUGINFOD_CACHE_PATH",
                dir.path().join(format!("find-cache-{attempt}")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "debuginfod did not index the debug file:\n{}",
            std::fs::read_to_string(dir.path().join("debuginfod.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let record = |out: &Path, cache: &Path| {
        let output = smolder_with_env(
            &[
                "record",
                "-o",
                out.to_str().unwrap(),
                "--",
                bin.to_str().unwrap(),
                "2",
            ],
            &[
                ("DEBUGINFOD_URLS", url.as_str()),
                ("DEBUGINFOD_CACHE_PATH", cache.to_str().unwrap()),
            ],
        );
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let named = dir.path().join("named.pb.gz");
    record(&named, &dir.path().join("cache"));
    let (profile, stacks) = read_pprof(&named);
    let complete = share(&stacks, |s| s.contains(CHAIN));
    assert!(
        complete >= 0.9,
        "with debuginfod: {:.0}% complete",
        complete * 100.0
    );
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let spin = profile
        .function
        .iter()
        .find(|f| s(f.name) == "spin")
        .expect("spin named");
    assert!(
        s(spin.filename).ends_with("chain.c"),
        "file from the debug file"
    );
    assert!(
        dir.path()
            .join("cache")
            .join(format!("{build_id}.debug"))
            .is_file(),
        "cached by build-id"
    );

    drop(server);
    let unnamed = dir.path().join("unnamed.pb.gz");
    let stderr = record(&unnamed, &dir.path().join("cold-cache"));
    let (_, stacks) = read_pprof(&unnamed);
    let kept = share(&stacks, |s| {
        s.frames.iter().any(|f| f.starts_with("chain+0x"))
    });
    assert!(
        kept >= 0.9,
        "server down: only {:.0}% keep chain+0xOFFSET frames",
        kept * 100.0
    );
    assert_eq!(
        stderr.matches("debuginfod at").count(),
        1,
        "said once:\n{stderr}"
    );
}

fn build_id_of(binary: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(binary)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .expect("build id")
}
