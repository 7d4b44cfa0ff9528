//! Separate debug files fetched by build-id (debuginfod, say), for binaries
//! that ship without symbols or lines. The symbolizer asks through
//! [`DebugInfoSource`]; fetching (HTTP, caching) is the caller's business,
//! so this crate stays free of network code.

use std::path::{Path, PathBuf};

use object::read::elf::{ElfFile64, ProgramHeader};
use object::ReadCache;

use crate::BuildId;

/// Finds the debug file of a binary by its build-id.
pub trait DebugInfoSource {
    /// A local path to the debug file for `build_id`, fetched if needed;
    /// `None` when there is none (or the source is failing: it says so itself).
    fn debug_file(&mut self, build_id: &BuildId) -> Option<PathBuf>;
}

/// PT_LOAD segments of an ELF file: (file offset, virtual address, size in file).
pub(crate) fn load_segments(path: &Path) -> Option<Vec<(u64, u64, u64)>> {
    let file = std::fs::File::open(path).ok()?;
    let cache = ReadCache::new(file);
    let elf = ElfFile64::<object::Endianness, _>::parse(&cache).ok()?;
    let endian = elf.endian();
    Some(
        elf.elf_program_headers()
            .iter()
            .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
            .map(|p| (p.p_offset(endian), p.p_vaddr(endian), p.p_filesz(endian)))
            .collect(),
    )
}

/// The virtual address of a file offset, through PT_LOAD segments.
pub(crate) fn virtual_address(segments: &[(u64, u64, u64)], file_offset: u64) -> Option<u64> {
    segments
        .iter()
        .find(|&&(off, _, size)| file_offset >= off && file_offset - off < size)
        .map(|&(off, vaddr, _)| vaddr + (file_offset - off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_offsets_map_through_load_segments() {
        let segments = [(0, 0x400000, 0x1000), (0x1000, 0x401000, 0x2000)];
        assert_eq!(virtual_address(&segments, 0x10), Some(0x400010));
        assert_eq!(virtual_address(&segments, 0x1800), Some(0x401800));
        assert_eq!(virtual_address(&segments, 0x3000), None);
    }
}
