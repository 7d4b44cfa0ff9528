//! Which Go release built a binary (its `.go.buildinfo`, kept in stripped
//! binaries), and where that release keeps the goroutine a thread runs and
//! its pprof labels. The file is untrusted: every read is bounded.

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection, ObjectSymbol};

use super::entry::GoProcessEntry;

/// How a release stores a label set (runtime/pprof/label.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelLayout {
    /// Go 1.18 to 1.23: `g.labels` points at a `map[string]string`
    /// variable.
    Map,
    /// Go 1.24 and later: at a struct whose first field is a slice of
    /// (key, value) string pairs, sorted by key.
    Slice,
}

/// A Go binary smolder can read labels from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRuntime {
    /// As the binary says it, `go1.22.12`.
    pub version: String,
    pub entry: GoProcessEntry,
    pub layout: LabelLayout,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoDetectError {
    #[error("cannot parse the executable as ELF: {0}")]
    Elf(String),
    #[error("built by {0}: goroutine labels are read from Go 1.18 to 1.26")]
    Version(String),
    #[error("malformed .go.buildinfo")]
    BuildInfo,
}

/// `runtime.g.m`: the same in every release read.
const G_M: u32 = 48;

/// (minor release, `runtime.g.labels`, `runtime.m.curg`), read from the
/// DWARF of a binary built by each release, linux/amd64 (1.18.10, 1.19.13,
/// 1.20.14, 1.21.13, 1.22.12, 1.23.12, 1.24.11, 1.25.5, 1.26.8; the way to
/// read them again is in docs/contributing.md). They move between
/// releases in both directions: measure, never extrapolate.
const OFFSETS: [(u32, u32, u32); 9] = [
    (18, 360, 192),
    (19, 360, 192),
    (20, 360, 192),
    (21, 344, 192),
    (22, 344, 192),
    (23, 352, 192),
    (24, 352, 192),
    (25, 344, 184),
    (26, 352, 184),
];

const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// The version string follows the header inline (flag bit 1, Go 1.18+).
const BUILDINFO_INLINE: u8 = 0x2;
const BUILDINFO_HEADER: usize = 32;

/// The Go runtime of an executable, None when it is not a Go binary.
pub fn detect(data: &[u8]) -> Result<Option<GoRuntime>, GoDetectError> {
    let elf = ElfFile64::<object::Endianness>::parse(data)
        .map_err(|e| GoDetectError::Elf(e.to_string()))?;
    let Some(section) = elf.section_by_name(".go.buildinfo") else {
        return Ok(None);
    };
    let info = section.data().map_err(|_| GoDetectError::BuildInfo)?;
    let version = build_version(info)?;
    let minor = minor_release(&version).ok_or_else(|| GoDetectError::Version(version.clone()))?;
    let &(_, labels_offset, curg_offset) = OFFSETS
        .iter()
        .find(|(m, _, _)| *m == minor)
        .ok_or_else(|| GoDetectError::Version(version.clone()))?;
    Ok(Some(GoRuntime {
        entry: GoProcessEntry {
            g_tls_offset: g_tls_offset(&elf),
            m_offset: G_M,
            curg_offset,
            labels_offset,
            _pad: 0,
        },
        layout: if minor >= 24 {
            LabelLayout::Slice
        } else {
            LabelLayout::Map
        },
        version,
    }))
}

/// The version string of a `.go.buildinfo` section (Go 1.18+ layout: a
/// 32-byte header, then the version as a varint-prefixed string).
fn build_version(info: &[u8]) -> Result<String, GoDetectError> {
    if !info.starts_with(BUILDINFO_MAGIC) || info.len() < BUILDINFO_HEADER {
        return Err(GoDetectError::BuildInfo);
    }
    if info[15] & BUILDINFO_INLINE == 0 {
        // Go 1.17 and earlier: pointers to the strings.
        return Err(GoDetectError::Version("Go 1.17 or earlier".into()));
    }
    let rest = &info[BUILDINFO_HEADER..];
    let (len, used) = uvarint(rest).ok_or(GoDetectError::BuildInfo)?;
    let end = used.saturating_add(len.min(256));
    let text = rest.get(used..end).ok_or(GoDetectError::BuildInfo)?;
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// `go1.22.12` (or `go1.22rc1`, `go1.22.1 X:boringcrypto`) -> 22.
fn minor_release(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn uvarint(data: &[u8]) -> Option<(usize, usize)> {
    let mut value: usize = 0;
    for (i, &byte) in data.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Where the running g is, from the thread pointer. Internally linked
/// binaries have no TLS segment and use fs:-8; externally linked ones (cgo)
/// put `runtime.tlsg` in their TLS block, whose place below the thread
/// pointer follows from the segment (TLS variant II, as glibc lays out the
/// executable's block); a stripped one is taken to have it at the block's
/// start, where Go's linker puts it.
fn g_tls_offset(elf: &ElfFile64<'_, object::Endianness>) -> i64 {
    let endian = elf.endian();
    let Some(tls) = elf
        .elf_program_headers()
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_TLS)
    else {
        return -8;
    };
    let tlsg = elf
        .symbols()
        .find(|s| s.name() == Ok("runtime.tlsg"))
        .map_or(0, |s| s.address());
    let align = tls.p_align(endian).max(1);
    let vaddr = tls.p_vaddr(endian);
    let firstbyte = vaddr.wrapping_neg() & (align - 1);
    let block = tls
        .p_memsz(endian)
        .wrapping_sub(firstbyte)
        .div_ceil(align)
        .wrapping_mul(align)
        .wrapping_add(firstbyte);
    (tlsg as i64).wrapping_sub(block as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_build_info() {
        assert_eq!(minor_release("go1.22.12"), Some(22));
        assert_eq!(minor_release("go1.26rc1"), Some(26));
        assert_eq!(minor_release("devel +abc"), None);
        let mut info = BUILDINFO_MAGIC.to_vec();
        info.extend([8, BUILDINFO_INLINE]);
        info.resize(BUILDINFO_HEADER, 0);
        info.push(9);
        info.extend(b"go1.24.11");
        assert_eq!(build_version(&info).unwrap(), "go1.24.11");
        info[15] = 0;
        assert!(matches!(
            build_version(&info),
            Err(GoDetectError::Version(_))
        ));
        assert_eq!(build_version(b"garbage"), Err(GoDetectError::BuildInfo));
    }
}
