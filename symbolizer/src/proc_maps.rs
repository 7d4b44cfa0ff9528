//! Parser for `/proc/PID/maps`. The file is untrusted input: a line that does
//! not parse is skipped and counted, never a panic.

use std::path::PathBuf;

/// Permissions of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
}

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapPath {
    /// A file, by the path the process sees (in its own mount namespace).
    File { path: PathBuf, deleted: bool },
    /// `[vdso]`, `[heap]`, `[stack]`, `[vsyscall]`, ...
    Pseudo(String),
    /// No name: anonymous memory (JIT code lives here).
    Anonymous,
}

/// One line of `/proc/PID/maps`. Addresses are in the process's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    /// File offset of `start`.
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub path: MapPath,
}

/// Parses the whole file; returns the entries and how many lines were rejected.
pub fn parse_maps(text: &str) -> (Vec<MapEntry>, usize) {
    let mut entries = Vec::new();
    let mut rejected = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(entry) => entries.push(entry),
            None => rejected += 1,
        }
    }
    (entries, rejected)
}

fn parse_line(line: &str) -> Option<MapEntry> {
    // start-end perms offset major:minor inode [path]; the path may contain spaces.
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let path = rest.trim_start();

    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end <= start {
        return None;
    }
    let perms = parse_perms(perms)?;
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let dev_major = u32::from_str_radix(major, 16).ok()?;
    let dev_minor = u32::from_str_radix(minor, 16).ok()?;
    let inode = inode.parse().ok()?;
    Some(MapEntry {
        start,
        end,
        perms,
        offset,
        dev_major,
        dev_minor,
        inode,
        path: parse_path(path, inode),
    })
}

fn parse_perms(p: &str) -> Option<Perms> {
    let b = p.as_bytes();
    if b.len() != 4 {
        return None;
    }
    Some(Perms {
        read: b[0] == b'r',
        write: b[1] == b'w',
        exec: b[2] == b'x',
        shared: b[3] == b's',
    })
}

fn parse_path(path: &str, inode: u64) -> MapPath {
    if path.is_empty() {
        return MapPath::Anonymous;
    }
    if path.starts_with('[') && inode == 0 {
        return MapPath::Pseudo(path.to_owned());
    }
    match path.strip_suffix(" (deleted)") {
        Some(p) => MapPath::File {
            path: PathBuf::from(p),
            deleted: true,
        },
        None => MapPath::File {
            path: PathBuf::from(path),
            deleted: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d4c0a00000-55d4c0a01000 r--p 00000000 fd:01 1234 /usr/bin/my prog
55d4c0a01000-55d4c0a02000 r-xp 00001000 fd:01 1234 /usr/bin/my prog
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f0000002000-7f0000003000 r-xp 00002000 08:02 99 /tmp/gone.so (deleted)
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]
garbage line here
ffff-0000 r-xp 00000000 00:00 0
";

    #[test]
    fn parses_files_anonymous_pseudo_and_deleted() {
        let (entries, rejected) = parse_maps(SAMPLE);
        assert_eq!(rejected, 2);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[1].start, 0x55d4c0a01000);
        assert!(entries[1].perms.exec && !entries[1].perms.write);
        assert_eq!(entries[1].offset, 0x1000);
        assert_eq!((entries[1].dev_major, entries[1].dev_minor), (0xfd, 1));
        assert_eq!(
            entries[1].path,
            MapPath::File {
                path: "/usr/bin/my prog".into(),
                deleted: false
            }
        );
        assert_eq!(entries[2].path, MapPath::Anonymous);
        assert_eq!(
            entries[3].path,
            MapPath::File {
                path: "/tmp/gone.so".into(),
                deleted: true
            }
        );
        assert_eq!(entries[4].path, MapPath::Pseudo("[vdso]".into()));
    }

    #[test]
    fn hostile_input_never_panics() {
        for text in [
            "-",
            "1-2",
            "1-2 rwxp",
            "zz-yy rwxp 0 0:0 0",
            "1-2 rwxpq 0 0:0 0 /x",
            "\u{0}\u{ffff}",
        ] {
            let (entries, _) = parse_maps(text);
            assert!(entries.is_empty(), "{text:?}");
        }
    }
}
