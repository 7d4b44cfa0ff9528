//! Names in the vDSO (`__vdso_clock_gettime`, ...). The vDSO is not a file:
//! the kernel maps the same image into every 64-bit process, so its symbols
//! come from this process's own copy, read once through `/proc/self/mem`.

use std::io::{Read, Seek, SeekFrom};

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSymbol, SymbolKind};

/// The vDSO's functions, by offset from the start of its mapping.
#[derive(Debug, Default)]
pub struct VdsoSymbols {
    /// (start, end, name), sorted by start.
    functions: Vec<(u64, u64, String)>,
}

/// The largest vDSO image we read (they are a few pages).
const MAX_IMAGE: u64 = 1 << 20;

impl VdsoSymbols {
    /// Reads this process's vDSO; empty if there is none or it does not parse.
    pub fn own() -> Self {
        read_own_image()
            .and_then(|image| Self::parse(&image))
            .unwrap_or_default()
    }

    /// Symbols of a vDSO image (an ELF file as mapped).
    pub fn parse(image: &[u8]) -> Option<Self> {
        let elf = ElfFile64::<object::LittleEndian>::parse(image).ok()?;
        let endian = elf.endian();
        // Offsets in the mapping are file offsets of the image: turn symbol
        // addresses into them through the first load segment.
        let load = elf
            .elf_program_headers()
            .iter()
            .find(|p| p.p_type(endian) == object::elf::PT_LOAD)?;
        let bias = load.p_vaddr(endian).wrapping_sub(load.p_offset(endian));
        let mut functions: Vec<(u64, u64, String)> = elf
            .dynamic_symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let start = s.address().wrapping_sub(bias);
                Some((
                    start,
                    start.checked_add(s.size())?,
                    s.name().ok()?.to_owned(),
                ))
            })
            .collect();
        // Aliases share an address (`clock_gettime`, `__vdso_clock_gettime`):
        // keep the `__vdso_` name, as perf shows it.
        functions.sort_by(|a, b| {
            (a.0, !a.2.starts_with("__vdso_")).cmp(&(b.0, !b.2.starts_with("__vdso_")))
        });
        functions.dedup_by_key(|f| f.0);
        Some(Self { functions })
    }

    /// The function containing `offset` (from the start of the mapping).
    pub fn name(&self, offset: u64) -> Option<&str> {
        let idx = self.functions.partition_point(|f| f.0 <= offset);
        let (_, end, name) = self.functions.get(idx.checked_sub(1)?)?;
        (offset < *end).then_some(name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

fn read_own_image() -> Option<Vec<u8>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let (start, end) = maps
        .lines()
        .filter(|l| l.ends_with("[vdso]"))
        .find_map(|l| {
            let (start, end) = l.split_once(' ')?.0.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })?;
    let len = end
        .checked_sub(start)
        .filter(|&n| n > 0 && n <= MAX_IMAGE)?;
    let mut mem = std::fs::File::open("/proc/self/mem").ok()?;
    mem.seek(SeekFrom::Start(start)).ok()?;
    let mut image = vec![0; len as usize];
    mem.read_exact(&mut image).ok()?;
    Some(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_vdso_names_clock_gettime() {
        let vdso = VdsoSymbols::own();
        assert!(!vdso.is_empty(), "no vDSO symbols");
        let (start, _, name) = vdso
            .functions
            .iter()
            .find(|f| f.2.contains("clock_gettime"))
            .expect("clock_gettime in the vDSO");
        assert_eq!(name, "__vdso_clock_gettime");
        assert_eq!(vdso.name(*start + 1), Some("__vdso_clock_gettime"));
        assert_eq!(vdso.name(u64::MAX), None);
    }

    #[test]
    fn garbage_is_no_symbols() {
        assert!(VdsoSymbols::parse(&[0u8; 64]).is_none());
        assert!(VdsoSymbols::parse(b"\x7fELF").is_none());
    }
}
