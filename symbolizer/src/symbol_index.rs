//! A compact index of a large ELF symbol table, for files that have no
//! debug info to add lines.
//!
//! blazesym indexes a symbol table in place: it maps the file, sorts an
//! 8-byte index over every symbol and reads the table through the mapping,
//! so the table's pages stay resident. For libtorch_cpu (535k symbols, a
//! 13 MiB `.symtab` and a 78 MiB `.strtab`) that held over 20 MiB for as
//! long as the file was in use, and a model server keeps it in use. This
//! index keeps 12 bytes per function and reads a name from the file only
//! when an address in that function is first named.

use std::fs::File;
use std::os::unix::fs::FileExt;

use object::elf::{FileHeader64, Sym64, SHT_SYMTAB, STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, Sym};
use object::{LittleEndian, ReadCache};

/// Symbol tables at least this large get this index rather than blazesym.
pub const MIN_SYMTAB_BYTES: u64 = 4 << 20;

/// Longest name read (mangled C++ names run to a few KiB).
const MAX_NAME: usize = 64 << 10;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start, relative to the index's base address.
    start: u32,
    size: u32,
    /// Offset of the name in the string table.
    name: u32,
}

/// A function found for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSymbol {
    pub name: String,
    pub start: u64,
    pub size: u64,
}

pub struct SymbolIndex {
    file: File,
    base: u64,
    entries: Vec<Entry>,
    strtab_offset: u64,
    strtab_size: u64,
    /// PT_LOAD segments: (file offset, virtual address, size in file).
    segments: Vec<(u64, u64, u64)>,
}

impl SymbolIndex {
    /// The index of `file`'s `.symtab` when that table is large and the
    /// file has no DWARF; `None` otherwise (blazesym does better there), or
    /// when the file is not a 64-bit little-endian ELF file.
    pub fn open(file: &File) -> Option<Self> {
        Self::open_with(file, MIN_SYMTAB_BYTES, true)
    }

    fn open_with(file: &File, min_bytes: u64, without_dwarf: bool) -> Option<Self> {
        let cache = ReadCache::new(file.try_clone().ok()?);
        let header = FileHeader64::<LittleEndian>::parse(&cache).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, &cache).ok()?;
        let segments = header
            .program_headers(endian, &cache)
            .ok()?
            .iter()
            .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
            .map(|p| (p.p_offset(endian), p.p_vaddr(endian), p.p_filesz(endian)))
            .collect();
        let has_dwarf = sections.iter().any(|s| {
            sections.section_name(endian, s).is_ok_and(|name| {
                name.starts_with(b".debug_info") || name.starts_with(b".zdebug_info")
            })
        });
        let (index, symtab) = sections
            .iter()
            .enumerate()
            .find(|(_, s)| s.sh_type(endian) == SHT_SYMTAB)?;
        if (without_dwarf && has_dwarf) || symtab.sh_size(endian) < min_bytes {
            return None;
        }
        let strtab = sections
            .section(object::SectionIndex(symtab.sh_link(endian) as usize))
            .ok()?;
        let symbols = sections
            .symbols(endian, &cache, SHT_SYMTAB)
            .ok()
            .filter(|table| table.section().0 == index)?;
        let executable: Vec<bool> = sections
            .iter()
            .map(|s| s.sh_flags(endian) & u64::from(object::elf::SHF_EXECINSTR) != 0)
            .collect();
        // Functions, and untyped labels in code (hand-written assembly,
        // MKL's kernels among it, often has no typed symbols).
        let functions = || {
            symbols.symbols().iter().filter(|sym| {
                let in_code = executable
                    .get(usize::from(sym.st_shndx(endian)))
                    .copied()
                    .unwrap_or(false);
                let kind = sym.st_type();
                in_code
                    && (kind == STT_FUNC || kind == STT_GNU_IFUNC || kind == STT_NOTYPE)
                    && sym.st_value(endian) != 0
            })
        };
        let base = functions().map(|s| s.st_value(endian)).min()?;
        let mut entries: Vec<Entry> = functions()
            .filter_map(|sym: &Sym64<LittleEndian>| {
                Some(Entry {
                    start: u32::try_from(sym.st_value(endian) - base).ok()?,
                    size: u32::try_from(sym.st_size(endian)).unwrap_or(u32::MAX),
                    name: sym.st_name(endian),
                })
            })
            .collect();
        // By address; at one address the largest symbol first.
        entries.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.size.cmp(&a.size)));
        entries.dedup_by_key(|e| e.start);
        entries.shrink_to_fit();
        Some(Self {
            file: file.try_clone().ok()?,
            base,
            entries,
            strtab_offset: strtab.sh_offset(endian),
            strtab_size: strtab.sh_size(endian),
            segments,
        })
    }

    /// The function that holds `address` (an ELF virtual address). A symbol
    /// of size 0 (hand-written assembly often has one) extends to the next.
    pub fn find(&self, address: u64) -> Option<FoundSymbol> {
        let relative = u32::try_from(address.checked_sub(self.base)?).ok()?;
        let at = self
            .entries
            .partition_point(|e| e.start <= relative)
            .checked_sub(1)?;
        let entry = self.entries[at];
        let size = match entry.size {
            0 => self
                .entries
                .get(at + 1)
                .map_or(0, |next| next.start - entry.start),
            size => size,
        };
        if u64::from(relative - entry.start) >= u64::from(size) {
            return None;
        }
        Some(FoundSymbol {
            name: self.name(entry.name)?,
            start: self.base + u64::from(entry.start),
            size: u64::from(size),
        })
    }

    /// The virtual address of a file offset, through the load segments.
    pub fn virtual_address(&self, file_offset: u64) -> Option<u64> {
        crate::debug_info::virtual_address(&self.segments, file_offset)
    }

    /// Bytes the index holds.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// A NUL-terminated name from the string table, read from the file.
    fn name(&self, offset: u32) -> Option<String> {
        let offset = u64::from(offset);
        if offset >= self.strtab_size {
            return None;
        }
        let limit = (self.strtab_size - offset).min(MAX_NAME as u64) as usize;
        let mut name = Vec::new();
        let mut chunk = vec![0u8; 256.min(limit)];
        while name.len() < limit {
            let want = chunk.len().min(limit - name.len());
            let read = self
                .file
                .read_at(
                    &mut chunk[..want],
                    self.strtab_offset + offset + name.len() as u64,
                )
                .ok()?;
            if read == 0 {
                return None;
            }
            if let Some(end) = chunk[..read].iter().position(|&b| b == 0) {
                name.extend_from_slice(&chunk[..end]);
                return Some(String::from_utf8_lossy(&name).into_owned());
            }
            name.extend_from_slice(&chunk[..read]);
            if chunk.len() < 4096 {
                chunk.resize(chunk.len() * 4, 0);
            }
        }
        None // no terminator within MAX_NAME: not a name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use object::{Object, ObjectSymbol, SymbolKind};

    #[test]
    fn names_agree_with_the_symbol_table() {
        let exe = File::open("/proc/self/exe").unwrap();
        let index = SymbolIndex::open_with(&exe, 0, false).expect("the test binary has a .symtab");
        let data = std::fs::read("/proc/self/exe").unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let mut checked = 0;
        for sym in elf
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        {
            let found = index
                .find(sym.address() + sym.size() / 2)
                .expect("inside a function");
            // Aliases share an address: the index keeps one of them.
            assert_eq!(found.start, sym.address(), "{:?}", sym.name());
            assert_eq!(found.size, sym.size());
            checked += 1;
        }
        assert!(checked > 1000, "only {checked} functions");
        assert!(index.find(index.base - 1).is_none());
        let marker = elf.symbols().find(|s| s.name() == Ok("main")).unwrap();
        assert_eq!(index.find(marker.address()).unwrap().name, "main");
    }

    #[test]
    fn small_tables_are_left_to_blazesym() {
        let exe = File::open("/proc/self/exe").unwrap();
        assert!(SymbolIndex::open_with(&exe, u64::MAX, false).is_none());
    }
}
