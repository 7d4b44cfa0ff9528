//! Go's own symbol table, `.gopclntab`: function names and file:line for Go
//! binaries, which keep it even when stripped (`-ldflags='-s -w'`) because the
//! runtime needs it. Layouts of Go 1.18 and later (1.16 and 1.17 differ only
//! in using pointer-sized function entries, also handled). The decoding
//! follows Go's `debug/gosym`. The section is read from the binary:
//! untrusted input, so every offset is bounds-checked.
//!
//! Inlined calls come from the inline tree (`FUNCDATA_InlTree`, Go 1.18+),
//! found through `moduledata.gofunc`. The module data is the `.go.module`
//! section (Go 1.26), or is found in `.noptrdata` by its pointer to the
//! pclntab.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection};

/// Why a file has no usable pclntab.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoTableError {
    #[error("no .gopclntab section (not a Go binary)")]
    NotGo,
    #[error("unsupported pclntab magic {0:#x}")]
    Unsupported(u32),
    #[error("pclntab is truncated or inconsistent")]
    Malformed,
    #[error("cannot read the ELF file: {0}")]
    Elf(String),
}

const MAGIC_116: u32 = 0xffff_fffa;
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;

/// One Go function at an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunction {
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A function of the table and its code range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoSpan {
    pub index: usize,
    pub start: u64,
    pub end: u64,
}

/// Section bytes: a range of the mapped file, or owned (tests, synthetic
/// tables).
#[derive(Debug, Clone)]
pub enum SectionBytes {
    Owned(Vec<u8>),
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

impl SectionBytes {
    fn mapped(map: &Arc<Mmap>, offset: u64, size: u64) -> Option<Self> {
        let start = usize::try_from(offset).ok()?;
        let len = usize::try_from(size).ok()?;
        (start.checked_add(len)? <= map.len()).then(|| SectionBytes::Mapped {
            map: Arc::clone(map),
            start,
            len,
        })
    }
}

impl From<Vec<u8>> for SectionBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SectionBytes::Owned(bytes)
    }
}

impl Deref for SectionBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SectionBytes::Owned(bytes) => bytes,
            SectionBytes::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

/// A parsed pclntab plus what is needed to turn file offsets into the
/// virtual addresses it is indexed by.
#[derive(Debug)]
pub struct GoTable {
    data: SectionBytes,
    version: u32,
    quantum: u64,
    ptr_size: usize,
    nfunc: usize,
    text_start: u64,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
    /// PT_LOAD segments: (file offset, virtual address, file size).
    segments: Vec<(u64, u64, u64)>,
    /// Virtual address of the pclntab section.
    address: u64,
    /// `moduledata.gofunc`, the base of funcdata offsets, when found.
    gofunc: Option<u64>,
    /// `.rodata` (address, bytes), where funcdata may live.
    rodata: Option<(u64, SectionBytes)>,
}

/// `_FUNCDATA_InlTree` and `_PCDATA_InlTreeIndex` (runtime/symtab.go).
const FUNCDATA_INL_TREE: usize = 3;
const PCDATA_INL_TREE_INDEX: usize = 2;
/// Deepest inlining followed (the compiler's limit is far lower).
const MAX_INLINE_DEPTH: usize = 64;

impl GoTable {
    /// Reads the pclntab of an ELF file, touching only the parts it needs.
    pub fn open(path: &Path) -> Result<Self, GoTableError> {
        let file = File::open(path).map_err(|e| GoTableError::Elf(e.to_string()))?;
        // SAFETY: a read-only private mapping. If the file is truncated while
        // mapped, reads past the end fault (as for every mmap-based reader,
        // blazesym included); binaries are not rewritten in place.
        let map =
            Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| GoTableError::Elf(e.to_string()))?);
        Self::from_map(map)
    }

    /// [`GoTable::open`] on a file already mapped.
    pub fn from_map(map: Arc<Mmap>) -> Result<Self, GoTableError> {
        let elf = ElfFile64::<object::Endianness, _>::parse(&map[..])
            .map_err(|e| GoTableError::Elf(e.to_string()))?;
        let section = elf
            .section_by_name(".gopclntab")
            .or_else(|| elf.section_by_name(".data.rel.ro.gopclntab"))
            .ok_or(GoTableError::NotGo)?;
        // The table stays in the page cache, not on the heap: a large Go
        // binary's pclntab is tens of MiB and lookups touch little of it.
        let mapped = |range: Option<(u64, u64)>| {
            let (offset, size) = range?;
            SectionBytes::mapped(&map, offset, size)
        };
        let data = mapped(section.file_range()).ok_or(GoTableError::Malformed)?;
        let text = elf
            .section_by_name(".text")
            .map(|s| s.address())
            .unwrap_or(0);
        let endian = elf.endian();
        let segments = elf
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
            .map(|p| (p.p_offset(endian), p.p_vaddr(endian), p.p_filesz(endian)))
            .collect();
        let address = section.address();
        let mut table = Self::parse(data, text, segments)?;
        table.address = address;
        let section_bytes = |name: &str| -> Option<(u64, Vec<u8>)> {
            let s = elf.section_by_name(name)?;
            Some((s.address(), s.data().ok()?.to_vec()))
        };
        let module = section_bytes(".go.module")
            .map(|(_, bytes)| bytes)
            .or_else(|| {
                section_bytes(".noptrdata").and_then(|(_, bytes)| table.find_moduledata(&bytes))
            });
        if let Some(module) = &module {
            // Externally linked (cgo) binaries leave the header's text start
            // zero, and C code comes first in .text: the module data has the
            // real runtime.text.
            let header_text = read_u64(&table.data, 8 + 2 * table.ptr_size);
            if table.version != MAGIC_116 && header_text == Some(0) {
                if let Some(text) = table.module_text(module) {
                    table.text_start = text;
                }
            }
        }
        table.gofunc = module.and_then(|m| table.gofunc_from(&m));
        if table.gofunc.is_some_and(|g| !table.in_pclntab(g)) {
            table.rodata = elf
                .section_by_name(".rodata")
                .and_then(|s| Some((s.address(), mapped(s.file_range())?)));
        }
        Ok(table)
    }

    /// Finds `runtime.firstmoduledata` in a data section: it starts with a
    /// pointer to the pclntab, followed by the funcnametab slice.
    fn find_moduledata(&self, data: &[u8]) -> Option<Vec<u8>> {
        let funcnametab = self.address.checked_add(self.funcnametab as u64)?;
        (0..data.len().saturating_sub(16))
            .step_by(8)
            .find(|&at| {
                read_u64(data, at) == Some(self.address)
                    && read_u64(data, at + 8) == Some(funcnametab)
            })
            .map(|at| data[at..].to_vec())
    }

    /// `moduledata.gofunc`: its offset depends on the layout version.
    fn gofunc_from(&self, module: &[u8]) -> Option<u64> {
        let offset = match self.version {
            MAGIC_120 => 320, // covctrs added in 1.20
            MAGIC_118 => 304,
            _ => return None, // 1.16/1.17 funcdata are absolute pointers
        };
        if read_u64(module, 0)? != self.address {
            return None; // not the module data of this pclntab
        }
        read_u64(module, offset).filter(|&g| g != 0)
    }

    /// `moduledata.text` (runtime.text), the same offset in every 1.18+ layout.
    fn module_text(&self, module: &[u8]) -> Option<u64> {
        if read_u64(module, 0)? != self.address {
            return None;
        }
        read_u64(module, 176).filter(|&t| t != 0)
    }

    fn in_pclntab(&self, address: u64) -> bool {
        address >= self.address && address - self.address < self.data.len() as u64
    }

    /// `len` bytes at a virtual address in the pclntab or `.rodata`.
    fn bytes_at(&self, address: u64, len: usize) -> Option<&[u8]> {
        let (base, data) = if self.in_pclntab(address) {
            (self.address, &self.data[..])
        } else {
            let (base, data) = self.rodata.as_ref()?;
            (*base, &data[..])
        };
        let start = usize::try_from(address.checked_sub(base)?).ok()?;
        data.get(start..start.checked_add(len)?)
    }

    /// Parses pclntab bytes. `text_section` is the address of `.text`, used
    /// when the header's own text start is zero (position-independent builds
    /// relocate it at run time).
    pub fn parse(
        data: impl Into<SectionBytes>,
        text_section: u64,
        segments: Vec<(u64, u64, u64)>,
    ) -> Result<Self, GoTableError> {
        let data: SectionBytes = data.into();
        let magic = read_u32(&data, 0).ok_or(GoTableError::Malformed)?;
        if ![MAGIC_116, MAGIC_118, MAGIC_120].contains(&magic) {
            return Err(GoTableError::Unsupported(magic));
        }
        let quantum = u64::from(*data.get(6).ok_or(GoTableError::Malformed)?);
        let ptr_size = usize::from(*data.get(7).ok_or(GoTableError::Malformed)?);
        if ptr_size != 8 || quantum == 0 {
            return Err(GoTableError::Malformed);
        }
        let word = |n: usize| -> Result<u64, GoTableError> {
            read_u64(&data, 8 + n * ptr_size).ok_or(GoTableError::Malformed)
        };
        let offset = |n: usize| -> Result<usize, GoTableError> {
            let value = usize::try_from(word(n)?).map_err(|_| GoTableError::Malformed)?;
            (value <= data.len())
                .then_some(value)
                .ok_or(GoTableError::Malformed)
        };
        let nfunc = usize::try_from(word(0)?).map_err(|_| GoTableError::Malformed)?;
        let (text_start, funcnametab, cutab, filetab, pctab, functab) = if magic == MAGIC_116 {
            // 1.16: no textStart word; offsets shift down by one.
            (
                text_section,
                offset(2)?,
                offset(3)?,
                offset(4)?,
                offset(5)?,
                offset(6)?,
            )
        } else {
            let header_text = word(2)?;
            let text = if header_text != 0 {
                header_text
            } else {
                text_section
            };
            (
                text,
                offset(3)?,
                offset(4)?,
                offset(5)?,
                offset(6)?,
                offset(7)?,
            )
        };
        let table = Self {
            version: magic,
            quantum,
            ptr_size,
            nfunc,
            text_start,
            funcnametab,
            cutab,
            filetab,
            pctab,
            functab,
            segments,
            data,
            address: 0,
            gofunc: None,
            rodata: None,
        };
        // The function table must fit: (nfunc * 2 + 1) fields.
        let fields = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .ok_or(GoTableError::Malformed)?;
        let end = fields
            .checked_mul(table.field_size())
            .and_then(|n| n.checked_add(functab));
        if end.is_none_or(|end| end > table.data.len()) {
            return Err(GoTableError::Malformed);
        }
        Ok(table)
    }

    /// Number of functions in the table.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// The virtual address of a file offset (through PT_LOAD segments).
    pub fn virtual_address(&self, file_offset: u64) -> Option<u64> {
        crate::debug_info::virtual_address(&self.segments, file_offset)
    }

    fn field_size(&self) -> usize {
        if self.version == MAGIC_116 {
            self.ptr_size
        } else {
            4
        }
    }

    /// Entry `i` of the function table as (pc, offset of its _func).
    fn functab_entry(&self, i: usize) -> Option<(u64, usize)> {
        let size = self.field_size();
        let at = i
            .checked_mul(2 * size)
            .and_then(|n| n.checked_add(self.functab))?;
        let (pc, func) = if size == 4 {
            (
                // A text start near u64::MAX is malformed, not an overflow
                // (found by the gopclntab fuzz target).
                u64::from(read_u32(&self.data, at)?).checked_add(self.text_start)?,
                read_u32(&self.data, at + 4)? as usize,
            )
        } else {
            (
                read_u64(&self.data, at)?,
                usize::try_from(read_u64(&self.data, at + 8)?).ok()?,
            )
        };
        Some((pc, func))
    }

    /// Every function with its code range, in address order (the function
    /// table is sorted); functions with an empty or reversed range skipped.
    pub fn spans(&self) -> impl Iterator<Item = GoSpan> + '_ {
        (0..self.nfunc).filter_map(move |index| {
            let (start, _) = self.functab_entry(index)?;
            let (end, _) = self.functab_entry(index + 1)?;
            (end > start).then_some(GoSpan { index, start, end })
        })
    }

    /// A function's name, as the table holds it (no allocation).
    pub fn span_name(&self, span: &GoSpan) -> Option<&[u8]> {
        let func = self.func_at(span.index)?;
        let at = self
            .funcnametab
            .checked_add(func.field(self, 1)? as usize)?;
        let rest = self.data.get(at..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    /// How far the stack pointer is below its value at the function's entry
    /// (after the call pushed the return address), over the function's code:
    /// its `pcsp` table as (pc, bytes) steps in address order, each in
    /// effect up to the next. `out` is cleared first. None when the table
    /// is malformed.
    pub fn sp_deltas(&self, span: &GoSpan, out: &mut Vec<(u64, i32)>) -> Option<()> {
        out.clear();
        let func = self.func_at(span.index)?;
        for step in self.pc_steps(func.field(self, 4)?, span.start) {
            let (pc, value, next) = step?;
            // Each step covers at least one quantum: a hostile table cannot
            // make more steps than the function has bytes.
            if out.len() as u64 > span.end - span.start {
                return None;
            }
            out.push((pc, value));
            if next >= span.end {
                break;
            }
        }
        Some(())
    }

    /// The steps of a pc-value table from `entry` (debug/gosym's pcvalue):
    /// (start pc, value, end pc) each, None where the table is malformed.
    fn pc_steps(&self, table: u32, entry: u64) -> PcSteps<'_> {
        PcSteps {
            table: self,
            at: self.pctab.checked_add(table as usize),
            pc: entry,
            value: -1,
            first: true,
        }
    }

    /// Function `index` of the function table.
    fn func_at(&self, index: usize) -> Option<Func> {
        let (entry, func_off) = self.functab_entry(index)?;
        let offset = self.functab.checked_add(func_off)?;
        (offset <= self.data.len()).then_some(Func { entry, offset })
    }

    /// The function containing the virtual address `pc`, without inlined
    /// calls.
    pub fn lookup(&self, pc: u64) -> Option<GoFunction> {
        self.lookup_frames(pc)?.pop()
    }

    /// The functions at `pc`, innermost first: the calls inlined there, then
    /// the function whose code it is.
    pub fn lookup_frames(&self, pc: u64) -> Option<Vec<GoFunction>> {
        let func = self.find_func(pc)?;
        let mut frames = Vec::new();
        let mut at = pc;
        if let Some(tree) = self.inline_tree(&func) {
            let mut index =
                self.pc_value(func.pcdata(self, PCDATA_INL_TREE_INDEX)?, func.entry, at);
            while let Some(ix) = index.and_then(|i| usize::try_from(i).ok()) {
                if frames.len() >= MAX_INLINE_DEPTH {
                    break;
                }
                let call = self.bytes_at(tree.checked_add(ix as u64 * 16)?, 16)?;
                let name_off =
                    usize::try_from(i32::from_le_bytes(call[4..8].try_into().ok()?)).ok()?;
                let parent_pc =
                    u64::try_from(i32::from_le_bytes(call[8..12].try_into().ok()?)).ok()?;
                let name = read_cstr(&self.data, self.funcnametab.checked_add(name_off)?)?;
                // The source position at `at` belongs to the innermost call.
                frames.push(self.position(&func, name, at));
                at = func.entry.checked_add(parent_pc)?;
                index = self.pc_value(func.pcdata(self, PCDATA_INL_TREE_INDEX)?, func.entry, at);
            }
        }
        let name = read_cstr(
            &self.data,
            self.funcnametab
                .checked_add(func.field(self, 1)? as usize)?,
        )?;
        frames.push(self.position(&func, name, at));
        Some(frames)
    }

    fn position(&self, func: &Func, name: String, pc: u64) -> GoFunction {
        let file = func
            .field(self, 5)
            .and_then(|table| self.pc_value(table, func.entry, pc))
            .and_then(|fno| self.file_name(func.field(self, 8)?, fno));
        let line = func
            .field(self, 6)
            .and_then(|table| self.pc_value(table, func.entry, pc))
            .and_then(|l| u32::try_from(l).ok());
        GoFunction { name, file, line }
    }

    /// Address of the function's inline tree, if it has one.
    fn inline_tree(&self, func: &Func) -> Option<u64> {
        let gofunc = self.gofunc?;
        let offset = func.funcdata(self, FUNCDATA_INL_TREE)?;
        (offset != u32::MAX).then(|| gofunc.checked_add(u64::from(offset)))?
    }

    fn find_func(&self, pc: u64) -> Option<Func> {
        if self.nfunc == 0 {
            return None;
        }
        // Binary search for the last entry at or below pc.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.functab_entry(mid)?.0 <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (entry, func_off) = self.functab_entry(lo)?;
        let (end, _) = self.functab_entry(lo + 1)?;
        if pc < entry || pc >= end {
            return None;
        }
        // Inside the table, so that a field's offset from it cannot
        // overflow (an overflow found by the gopclntab fuzz target).
        let offset = self.functab.checked_add(func_off)?;
        if offset > self.data.len() {
            return None;
        }
        Some(Func { entry, offset })
    }

    fn file_name(&self, cu_offset: u32, fno: i32) -> Option<String> {
        let index = usize::try_from(cu_offset)
            .ok()?
            .checked_add(usize::try_from(fno).ok()?)?;
        let file_off = read_u32(&self.data, self.cutab.checked_add(index.checked_mul(4)?)?)?;
        if file_off == u32::MAX {
            return None;
        }
        read_cstr(&self.data, self.filetab.checked_add(file_off as usize)?)
    }

    /// The value a pc-value table gives at `target`.
    fn pc_value(&self, table: u32, entry: u64, target: u64) -> Option<i32> {
        // A real table ends well before this many steps; a hostile one must
        // not loop forever.
        for step in self.pc_steps(table, entry).take(1_000_000) {
            let (_, value, next) = step?;
            if target < next {
                return Some(value);
            }
        }
        None
    }
}

/// Walks a pc-value table: varint pairs of (value delta, pc delta in
/// quanta), ending at a zero value delta after the first.
struct PcSteps<'t> {
    table: &'t GoTable,
    /// Where the next pair is; None once the walk ended or failed.
    at: Option<usize>,
    pc: u64,
    value: i32,
    first: bool,
}

impl Iterator for PcSteps<'_> {
    type Item = Option<(u64, i32, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at.take()?;
        let step = (|| {
            let (uvdelta, n) = read_varint(&self.table.data, at)?;
            if uvdelta == 0 && !self.first {
                return Some(None);
            }
            self.first = false;
            let vdelta = if uvdelta & 1 != 0 {
                !(uvdelta >> 1)
            } else {
                uvdelta >> 1
            } as i32;
            let (pcdelta, m) = read_varint(&self.table.data, at + n)?;
            let start = self.pc;
            self.pc = start.checked_add(u64::from(pcdelta).checked_mul(self.table.quantum)?)?;
            self.value = self.value.wrapping_add(vdelta);
            self.at = Some(at + n + m);
            Some(Some((start, self.value, self.pc)))
        })();
        match step {
            Some(Some(step)) => Some(Some(step)),
            Some(None) => None, // the table's end
            None => Some(None), // malformed
        }
    }
}

/// A `_func` record: its entry pc and where it starts in the table.
struct Func {
    entry: u64,
    offset: usize,
}

impl Func {
    /// Field `n` (1-based, after the entry) of `_func`, all u32.
    fn field(&self, t: &GoTable, n: usize) -> Option<u32> {
        let first = if t.version == MAGIC_116 {
            t.ptr_size
        } else {
            4
        };
        read_u32(&t.data, self.offset + first + (n - 1) * 4)
    }

    /// Size of the fixed part of `_func`, before the pcdata offsets.
    fn header_len(t: &GoTable) -> usize {
        match t.version {
            MAGIC_120 => 44, // startLine added in 1.20
            MAGIC_118 => 40,
            _ => 8 + 8 * 4,
        }
    }

    fn pcdata(&self, t: &GoTable, index: usize) -> Option<u32> {
        let npcdata = self.field(t, 7)? as usize;
        (index < npcdata)
            .then(|| read_u32(&t.data, self.offset + Self::header_len(t) + index * 4))?
    }

    fn funcdata(&self, t: &GoTable, index: usize) -> Option<u32> {
        let npcdata = self.field(t, 7)? as usize;
        let nfuncdata = usize::from(*t.data.get(self.offset + Self::header_len(t) - 1)?);
        if index >= nfuncdata {
            return None;
        }
        read_u32(
            &t.data,
            self.offset + Self::header_len(t) + npcdata * 4 + index * 4,
        )
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn read_cstr(data: &[u8], at: usize) -> Option<String> {
    let bytes = data.get(at..)?;
    let end = bytes.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// An unsigned LEB128 varint of at most 32 bits: (value, bytes read).
fn read_varint(data: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, shift) in (0..35).step_by(7).enumerate() {
        let byte = *data.get(at + i)?;
        value |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_and_overlong_ones_are_rejected() {
        assert_eq!(read_varint(&[0x05], 0), Some((5, 1)));
        assert_eq!(read_varint(&[0x96, 0x01], 0), Some((150, 2)));
        assert_eq!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0), None);
        assert_eq!(read_varint(&[0x80], 0), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            GoTable::parse(vec![], 0, vec![]).unwrap_err(),
            GoTableError::Malformed
        );
        assert_eq!(
            GoTable::parse(vec![1, 2, 3, 4, 0, 0, 1, 8], 0, vec![]).unwrap_err(),
            GoTableError::Unsupported(0x04030201)
        );
        // Right magic, absurd function count.
        let mut data = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        data.extend(std::iter::repeat_n(0u8, 64));
        assert!(GoTable::parse(data, 0, vec![]).is_err());
    }
}
