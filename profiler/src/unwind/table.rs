//! Unwind tables: an ELF file's `.eh_frame` (or `.debug_frame`) turned into
//! the paged, sorted [`Row`]s the BPF unwinder binary-searches.
//!
//! FDEs are first listed and sorted by address (16 bytes each, not a copy of
//! every row), then run with gimli one after the other, so rows come out in
//! address order and go straight into their 64 KiB pages. Each row becomes
//! one compact rule (CFA from rsp or rbp plus an offset, where rbp was
//! saved); consecutive rows with the same rule are merged. Executable code
//! that no FDE covers (hand-written assembly) gets rules read from its
//! machine code (`code_rules`); anything else between FDEs gets the invalid
//! rule, so an address there is never unwound with its neighbour's rule. The
//! file is untrusted: a malformed FDE is skipped and counted, never a panic.
//!
//! Memory: gaps shorter than [`PADDING`] are not read at all, and code read
//! from a mapped file is handed back to the kernel as the pass moves on, so
//! building libtorch_cpu's table (286 MiB of code) keeps a few MiB of its
//! code resident rather than nearly all of it.

use rustc_hash::FxHashMap;

use gimli::{
    BaseAddresses, CfaRule as GimliCfa, DebugFrame, EhFrame, LittleEndian, RegisterRule,
    UnwindContext, UnwindOffset, UnwindSection, X86_64,
};
use memmap2::{Mmap, UncheckedAdvice};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection, SectionFlags};

use std::sync::Arc;

use symbolizer::{GoSpan, GoTable};

use super::code_rules::{rules_from_code, CodeRulesStats};
use super::go_rows::GoRows;
use super::layout::{CfaRule, Page, RbpRule, Row, Rule, PAGE_SHIFT};

/// A module's table. Offsets inside it are relative to `base`, an ELF
/// virtual address; page `i` covers `[base + i * 64 KiB, base + (i + 1) * 64 KiB)`.
/// Row rules index `rules`, the table's own rule list; they are renumbered
/// into the host-wide rule array when the table is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwindTable {
    pub base: u64,
    pub pages: Vec<Page>,
    pub rows: Vec<Row>,
    pub rules: Vec<Rule>,
    /// FDEs that did not parse or run (their addresses stay uncovered).
    pub bad_entries: usize,
    /// Code without CFI that got rules from its instructions.
    pub code_rules: CodeRulesStats,
}

impl UnwindTable {
    /// The rule in effect at `address` (an ELF virtual address), if the
    /// table covers it: what the BPF lookup finds.
    pub fn rule_at(&self, address: u64) -> Option<Rule> {
        let offset = address.checked_sub(self.base)?;
        let page = self
            .pages
            .get(usize::try_from(offset >> PAGE_SHIFT).ok()?)?;
        let rows = self
            .rows
            .get(page.first_row as usize..(page.first_row + page.row_count) as usize)?;
        let pc = (offset & 0xffff) as u16;
        let at = rows.partition_point(|r| r.pc <= pc).checked_sub(1)?;
        self.rules.get(usize::from(rows[at].rule)).copied()
    }
}

/// A PT_LOAD segment: how file offsets become virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
}

/// What [`parse_elf`] reads from a file.
#[derive(Debug, Clone)]
pub struct ElfUnwindInfo {
    pub table: UnwindTable,
    pub segments: Vec<LoadSegment>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf(#[source] object::Error),
    #[error("no .eh_frame or .debug_frame")]
    NoCfi,
    #[error("no usable unwind rows (every FDE was malformed: {0})")]
    Empty(usize),
    #[error("code spans more than 4 GiB ({0:#x} bytes): table offsets are 32-bit")]
    TooLarge(u64),
}

/// The `.plt` CFA expression GCC and binutils emit for 16-byte PLT slots:
/// rsp + 8 + ((rip & 15) >= 11 ? 8 : 0).
const PLT_EXPRESSION: [u8; 11] = [
    0x77, 0x08, // DW_OP_breg7 (rsp) 8
    0x80, 0x00, // DW_OP_breg16 (rip) 0
    0x3f, // DW_OP_lit15
    0x1a, // DW_OP_and
    0x3b, // DW_OP_lit11
    0x2a, // DW_OP_ge
    0x33, // DW_OP_lit3
    0x24, // DW_OP_shl
    0x22, // DW_OP_plus
];

/// Gaps between FDEs shorter than this are alignment padding, or stubs too
/// small to have a frame: they get a function entry's rule (CFA = rsp + 8)
/// without being read. Reading them would touch nearly every page of a
/// large library's code (libtorch_cpu has 337k such gaps).
pub const PADDING: u64 = 32;

/// Code read from a mapping is released in steps of at least this much.
const RELEASE_STEP: usize = 1 << 20;

/// Reads the load segments and the unwind table of an ELF file in memory.
pub fn parse_elf(data: &[u8]) -> Result<ElfUnwindInfo, TableError> {
    parse(data, None, None)
}

/// [`parse_elf`] on a mapped file: the code read for rules is released as
/// the pass goes, so the file's pages do not stay resident in this process.
/// Go code gets rows from `.gopclntab` (`go_rows`).
pub fn parse_mapped_elf(map: &Arc<Mmap>) -> Result<ElfUnwindInfo, TableError> {
    let go = GoTable::from_map(map.clone()).ok().map(GoRows::new);
    parse(map, Some(map), go)
}

fn parse(
    data: &[u8],
    mapped: Option<&Mmap>,
    mut go: Option<GoRows>,
) -> Result<ElfUnwindInfo, TableError> {
    let elf = ElfFile64::<LittleEndianObject>::parse(data).map_err(TableError::NotElf)?;
    let endian = elf.endian();
    let segments = elf
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
        .map(|p| LoadSegment {
            offset: p.p_offset(endian),
            vaddr: p.p_vaddr(endian),
            file_size: p.p_filesz(endian),
        })
        .collect();
    let section_address = |name: &str| elf.section_by_name(name).map(|s| s.address());
    let mut bases = BaseAddresses::default();
    if let Some(text) = section_address(".text") {
        bases = bases.set_text(text);
    }
    if let Some(got) = section_address(".got") {
        bases = bases.set_got(got);
    }
    let code = Code {
        sections: executable_sections(&elf),
        mapped,
    };
    if let Some(section) = elf.section_by_name(".eh_frame") {
        if let Ok(bytes) = section.data() {
            let bases = bases.clone().set_eh_frame(section.address());
            let eh_frame = EhFrame::new(bytes, LittleEndian);
            if let Some(table) = build_table(&eh_frame, &bases, &code, go.as_mut())? {
                return Ok(ElfUnwindInfo { table, segments });
            }
        }
    }
    // Go's rows alone: Go's own .debug_frame says nothing its pclntab does
    // not (and is compressed in the binaries Go links).
    if go.is_some() {
        let none = EhFrame::new(&[], LittleEndian);
        if let Some(table) = build_table(&none, &bases, &code, go.as_mut())? {
            return Ok(ElfUnwindInfo { table, segments });
        }
    }
    // .debug_frame only where .eh_frame has nothing (rare: some toolchains
    // emit only .debug_frame; .eh_frame wins where both cover code).
    if let Some(section) = elf.section_by_name(".debug_frame") {
        if let Ok(bytes) = section.data() {
            let mut debug_frame = DebugFrame::new(bytes, LittleEndian);
            debug_frame.set_address_size(8);
            if let Some(table) = build_table(&debug_frame, &bases, &code, None)? {
                return Ok(ElfUnwindInfo { table, segments });
            }
        }
    }
    Err(TableError::NoCfi)
}

type LittleEndianObject = object::LittleEndian;

/// The executable sections, and the mapping they live in (if any).
struct Code<'d> {
    sections: Vec<CodeSection<'d>>,
    mapped: Option<&'d Mmap>,
}

impl Code<'_> {
    /// Hands the whole pages of `bytes` (part of a section) back to the
    /// kernel when they come from the mapping; later reads fault them in
    /// again from the file.
    fn release(&self, bytes: &[u8]) {
        let Some(map) = self.mapped else { return };
        let start = (bytes.as_ptr() as usize).wrapping_sub(map.as_ptr() as usize);
        if start >= map.len() || bytes.len() > map.len() - start {
            return; // not in the mapping
        }
        // SAFETY: the range lies inside `map`, a read-only file mapping:
        // dropping its pages loses nothing (they are the file's contents),
        // and no reference into the range outlives this call's callers'
        // use of it (the next read faults the page back in).
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, bytes.len()) };
    }
}

/// An executable section's addresses and bytes.
struct CodeSection<'d> {
    address: u64,
    bytes: &'d [u8],
}

impl CodeSection<'_> {
    fn end(&self) -> u64 {
        self.address.saturating_add(self.bytes.len() as u64)
    }
}

/// The allocated, executable sections with file contents, sorted by address.
fn executable_sections<'d>(elf: &ElfFile64<'d, LittleEndianObject>) -> Vec<CodeSection<'d>> {
    let mut code: Vec<CodeSection<'d>> = elf
        .sections()
        .filter(|s| match s.flags() {
            SectionFlags::Elf { sh_flags } => {
                let flags = u64::from(object::elf::SHF_ALLOC | object::elf::SHF_EXECINSTR);
                sh_flags & flags == flags
            }
            _ => false,
        })
        .filter_map(|s| {
            let bytes = s.data().ok()?;
            (!bytes.is_empty()).then(|| CodeSection {
                address: s.address(),
                bytes,
            })
        })
        .collect();
    code.sort_by_key(|c| c.address);
    // Overlapping sections (a corrupt file) would feed addresses twice.
    let mut end = 0;
    code.retain(|c| {
        let keep = c.address >= end;
        if keep {
            end = c.end();
        }
        keep
    });
    code
}

/// An FDE's or a Go function's place: its code range and where its rows
/// come from.
#[derive(Debug, Clone, Copy)]
struct FdeRef {
    start: u64,
    end: u64,
    source: Source,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    /// An FDE at this offset of the section.
    Fde(usize),
    /// A function of the Go table.
    Go(GoSpan),
}

/// The rows of a section's FDEs and of Go's functions, with machine-code
/// rules for the executable code between them. None when neither has a
/// usable entry.
fn build_table<'d, S>(
    section: &S,
    bases: &BaseAddresses,
    code: &Code<'_>,
    mut go: Option<&mut GoRows>,
) -> Result<Option<UnwindTable>, TableError>
where
    S: UnwindSection<gimli::EndianSlice<'d, LittleEndian>>,
    S::Offset: UnwindOffset<usize>,
{
    let (mut fdes, mut bad) = list_fdes(section, bases);
    if let Some(go) = go.as_deref() {
        fdes.extend(go.spans().map(|span| FdeRef {
            start: span.start,
            end: span.end,
            source: Source::Go(span),
        }));
    }
    if fdes.is_empty() {
        return if bad > 0 {
            Err(TableError::Empty(bad))
        } else {
            Ok(None)
        };
    }
    fdes.sort_by_key(|f| (f.start, f.end));
    let first = fdes[0].start;
    let last = fdes.iter().map(|f| f.end).max().unwrap_or(first);
    // Code before the first FDE or after the last one is covered too.
    let near = |c: &&CodeSection| {
        c.end() > first.saturating_sub(1 << 32) && c.address < last.saturating_add(1 << 32)
    };
    let base = code
        .sections
        .iter()
        .filter(near)
        .map(|c| c.address)
        .fold(first, u64::min);
    let end = code
        .sections
        .iter()
        .filter(near)
        .map(|c| c.end())
        .fold(last, u64::max);
    if end - base > u64::from(u32::MAX) {
        return Err(TableError::TooLarge(end - base));
    }
    let mut writer = RowWriter::new(base);
    let mut ctx = Box::new(UnwindContext::new());
    let mut fde_rows: Vec<(u64, u64, Rule)> = Vec::new();
    let mut covered_to = base;
    for fde_ref in &fdes {
        if fde_ref.end <= covered_to {
            continue; // overlaps what is covered already: the first rule stands
        }
        fde_rows.clear();
        let ok = match fde_ref.source {
            Source::Fde(offset) => (|| -> gimli::Result<()> {
                let fde = section.fde_from_offset(
                    bases,
                    S::Offset::from(offset),
                    |section, bases, offset| section.cie_from_offset(bases, offset),
                )?;
                let mut table = fde.rows(section, bases, &mut ctx)?;
                while let Some(row) = table.next_row()? {
                    if row.end_address() > row.start_address() {
                        fde_rows.push((
                            row.start_address(),
                            row.end_address(),
                            convert(row, section),
                        ));
                    }
                }
                Ok(())
            })()
            .is_ok(),
            Source::Go(span) => go
                .as_deref_mut()
                .is_some_and(|go| go.rows(&span, &mut fde_rows)),
        };
        if !ok {
            bad += 1;
            continue;
        }
        for &(start, row_end, rule) in &fde_rows {
            // Rows past the range the FDEs declare (malformed CFI) are
            // dropped: the table covers [base, end), which bounds its pages
            // (unbounded growth was found by the eh_frame fuzz target).
            if start >= end {
                continue;
            }
            let row_end = row_end.min(end);
            if row_end <= covered_to {
                continue;
            }
            if start > covered_to {
                writer.fill_gap(covered_to, start, code);
            }
            writer.push(start.max(covered_to), rule);
            covered_to = row_end;
        }
    }
    writer.fill_gap(covered_to, end, code);
    writer.push(end.max(covered_to), Rule::INVALID);
    Ok(Some(writer.finish(bad)))
}

/// Every FDE that parses, and how many did not.
fn list_fdes<'d, S>(section: &S, bases: &BaseAddresses) -> (Vec<FdeRef>, usize)
where
    S: UnwindSection<gimli::EndianSlice<'d, LittleEndian>>,
    S::Offset: UnwindOffset<usize>,
{
    let mut fdes = Vec::new();
    let mut bad = 0;
    let mut entries = section.entries(bases);
    loop {
        let entry = match entries.next() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            // The rest of the section cannot be found once a length is bad.
            Err(_) => {
                bad += 1;
                break;
            }
        };
        let gimli::CieOrFde::Fde(partial) = entry else {
            continue;
        };
        match partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset)) {
            Ok(fde) if fde.len() > 0 => fdes.push(FdeRef {
                start: fde.initial_address(),
                end: fde.initial_address().saturating_add(fde.len()),
                source: Source::Fde(fde.offset()),
            }),
            Ok(_) => {}
            Err(_) => bad += 1,
        }
    }
    (fdes, bad)
}

/// Rows in address order, cut into pages, rules numbered as they come.
struct RowWriter {
    base: u64,
    pages: Vec<Page>,
    rows: Vec<Row>,
    rules: Vec<Rule>,
    rule_index: FxHashMap<Rule, u16>,
    last: Option<Rule>,
    code_rules: CodeRulesStats,
}

impl RowWriter {
    fn new(base: u64) -> Self {
        let mut writer = Self {
            base,
            pages: Vec::new(),
            rows: Vec::new(),
            rules: Vec::new(),
            rule_index: FxHashMap::default(),
            last: None,
            code_rules: CodeRulesStats::default(),
        };
        // Local rule 0 is the invalid rule, as in the host-wide array.
        writer.number(Rule::INVALID);
        writer
    }

    fn number(&mut self, rule: Rule) -> u16 {
        if let Some(&index) = self.rule_index.get(&rule) {
            return index;
        }
        let Ok(index) = u16::try_from(self.rules.len()) else {
            // More distinct rules than one table can name: the unwinder
            // stops there with an error rather than guess.
            return self.number(Rule::UNSUPPORTED);
        };
        self.rules.push(rule);
        self.rule_index.insert(rule, index);
        index
    }

    /// The rule from `at` on. Calls come in address order; a second rule at
    /// the same address replaces the first.
    fn push(&mut self, at: u64, rule: Rule) {
        let Some(offset) = at
            .checked_sub(self.base)
            .filter(|&o| o <= u64::from(u32::MAX))
        else {
            debug_assert!(false, "row at 0x{at:x} outside the table");
            return;
        };
        let page = (offset >> PAGE_SHIFT) as usize;
        while self.pages.len() <= page {
            let first_row = self.rows.len() as u32;
            self.pages.push(Page {
                first_row,
                row_count: 0,
            });
            // Every page starts with the rule in effect at its start.
            if let Some(carried) = self.last {
                let rule = self.number(carried);
                self.rows.push(Row { pc: 0, rule });
            }
            self.update_count();
        }
        if self.last == Some(rule) {
            return;
        }
        let pc = (offset & 0xffff) as u16;
        let index = self.number(rule);
        let in_page = self.rows.len() > self.pages[page].first_row as usize;
        match self.rows.last_mut() {
            Some(last) if in_page && last.pc == pc => last.rule = index,
            _ => self.rows.push(Row { pc, rule: index }),
        }
        self.last = Some(rule);
        self.update_count();
    }

    fn update_count(&mut self) {
        let rows = self.rows.len() as u32;
        if let Some(page) = self.pages.last_mut() {
            page.row_count = rows - page.first_row;
        }
    }

    /// Rules for `[from, to)`, which no FDE covers: from the machine code
    /// where it is executable code, else the invalid rule. Padding is not
    /// read (see [`PADDING`]).
    fn fill_gap(&mut self, from: u64, to: u64, code: &Code<'_>) {
        // Rows past their FDE's end (malformed) cover beyond the last
        // FDE: nothing is left to fill (found by the eh_frame fuzz target).
        if to <= from {
            return;
        }
        if to - from < PADDING {
            self.push(from, Rule::rsp(8));
            return;
        }
        let mut at = from;
        for section in code
            .sections
            .iter()
            .filter(|c| c.address < to && c.end() > from)
        {
            let start = section.address.max(from);
            let stop = section.end().min(to);
            if start > at {
                self.push(at, Rule::INVALID);
            }
            let bytes = &section.bytes
                [(start - section.address) as usize..(stop - section.address) as usize];
            // Release what the pass has read as it goes (it reads forward).
            let mut released = 0;
            let stats = rules_from_code(bytes, start, |address, rule| {
                self.push(address, rule);
                let read = (address - start) as usize;
                if read - released >= RELEASE_STEP {
                    code.release(&bytes[released..read]);
                    released = read;
                }
            });
            code.release(&bytes[released..]);
            self.code_rules.bytes += stats.bytes;
            self.code_rules.unknown += stats.unknown;
            at = stop;
        }
        if at < to {
            self.push(at, Rule::INVALID);
        }
    }

    fn finish(self, bad_entries: usize) -> UnwindTable {
        UnwindTable {
            base: self.base,
            pages: self.pages,
            rows: self.rows,
            rules: self.rules,
            bad_entries,
            code_rules: self.code_rules,
        }
    }
}

/// `DW_OP_breg6 (rbp) OFFSET`, optionally followed by `DW_OP_deref` (the
/// bool): the expressions GCC emits for frames that realign the stack
/// (`CFA = *(rbp - 8)`, the caller's rbp at `rbp + 0`).
fn rbp_plus(expression: &[u8]) -> Option<(i32, bool)> {
    use gimli::Reader;
    let mut reader = gimli::EndianSlice::new(expression, LittleEndian);
    if reader.read_u8().ok()? != gimli::constants::DW_OP_breg6.0 {
        return None;
    }
    let offset = i32::try_from(reader.read_sleb128().ok()?).ok()?;
    match reader.slice() {
        [] => Some((offset, false)),
        [op] if *op == gimli::constants::DW_OP_deref.0 => Some((offset, true)),
        _ => None,
    }
}

fn convert<'d, S>(row: &gimli::UnwindTableRow<usize>, section: &S) -> Rule
where
    S: UnwindSection<gimli::EndianSlice<'d, LittleEndian>>,
{
    if matches!(row.register(X86_64::RA), Some(RegisterRule::Undefined)) {
        return Rule::END;
    }
    // x86-64 keeps the return address at CFA - 8; anything else (signal
    // trampolines) is not followed.
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return Rule::UNSUPPORTED,
    }
    let (cfa, cfa_offset) = match row.cfa() {
        GimliCfa::RegisterAndOffset { register, offset } => {
            let Ok(offset) = i32::try_from(*offset) else {
                return Rule::UNSUPPORTED;
            };
            match *register {
                X86_64::RSP => (CfaRule::Rsp, offset),
                X86_64::RBP => (CfaRule::Rbp, offset),
                _ => return Rule::UNSUPPORTED,
            }
        }
        GimliCfa::Expression(expression) => match expression.get(section) {
            Ok(e) if e.0.slice() == PLT_EXPRESSION => (CfaRule::Plt, 0),
            Ok(e) => match rbp_plus(e.0.slice()) {
                Some((offset, true)) => (CfaRule::DerefRbp, offset),
                _ => return Rule::UNSUPPORTED,
            },
            Err(_) => return Rule::UNSUPPORTED,
        },
    };
    let rule = Rule {
        cfa_type: cfa as u8,
        ..Rule::rsp(cfa_offset)
    };
    match row.register(X86_64::RBP) {
        Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
            Ok(offset) => rule.rbp_saved_at(offset),
            Err(_) => Rule::UNSUPPORTED,
        },
        // Realigned frames: the caller's rbp at rbp + offset.
        Some(RegisterRule::Expression(expression)) => {
            match expression
                .get(section)
                .ok()
                .and_then(|e| rbp_plus(e.0.slice()))
            {
                Some((offset, false)) => match i16::try_from(offset) {
                    Ok(offset) => Rule {
                        rbp_offset: offset,
                        rbp_type: RbpRule::AtRbp as u8,
                        ..rule
                    },
                    Err(_) => Rule::UNSUPPORTED,
                },
                _ => Rule::UNSUPPORTED,
            }
        }
        // Same value, undefined, or a rule we do not follow: rbp stays as it
        // is; a later rbp-based CFA that goes wrong stops with an error.
        _ => rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(pushes: &[(u64, Rule)]) -> UnwindTable {
        let mut writer = RowWriter::new(0x10_0000);
        for &(at, rule) in pushes {
            writer.push(at, rule);
        }
        writer.finish(0)
    }

    #[test]
    fn rows_merge_repeats_and_later_rules_win() {
        let table = written(&[
            (0x10_0000, Rule::rsp(8)),
            (0x10_0004, Rule::rsp(16)),
            (0x10_0010, Rule::rsp(16)), // same rule: merged
            (0x10_0020, Rule::INVALID),
            (0x10_0020, Rule::rsp(8)), // same address: replaces
            (0x10_0040, Rule::INVALID),
        ]);
        let summary: Vec<(u16, Rule)> = table
            .rows
            .iter()
            .map(|r| (r.pc, table.rules[usize::from(r.rule)]))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0x0, Rule::rsp(8)),
                (0x4, Rule::rsp(16)),
                (0x20, Rule::rsp(8)),
                (0x40, Rule::INVALID)
            ]
        );
        assert_eq!(
            table.pages,
            vec![Page {
                first_row: 0,
                row_count: 4
            }]
        );
        assert_eq!(table.rule_at(0x10_0008), Some(Rule::rsp(16)));
        assert_eq!(table.rule_at(0x10_0030), Some(Rule::rsp(8)));
        assert_eq!(table.rule_at(0x10_0fff), Some(Rule::INVALID));
        assert_eq!(table.rule_at(0xf_ffff), None);
    }

    #[test]
    fn each_page_starts_with_the_rule_in_effect() {
        let table = written(&[
            (0x10_0000, Rule::rsp(8)),
            (0x10_fff0, Rule::rsp(24)),
            // Two pages later, with nothing in between.
            (0x13_0010, Rule::rsp(40)),
            (0x13_0020, Rule::INVALID),
        ]);
        assert_eq!(table.pages.len(), 4);
        for (i, page) in table.pages.iter().enumerate().skip(1) {
            assert_eq!(table.rows[page.first_row as usize].pc, 0, "page {i}");
        }
        assert_eq!(table.rule_at(0x11_0000), Some(Rule::rsp(24)));
        assert_eq!(table.rule_at(0x12_8000), Some(Rule::rsp(24)));
        assert_eq!(table.rule_at(0x13_000f), Some(Rule::rsp(24)));
        assert_eq!(table.rule_at(0x13_0010), Some(Rule::rsp(40)));
        assert_eq!(table.rule_at(0x13_0020), Some(Rule::INVALID));
        assert_eq!(table.rule_at(0x14_0000), None);
    }

    #[test]
    fn realigned_frame_expressions_are_read() {
        // DW_OP_breg6 -24; DW_OP_deref / DW_OP_breg6 0 / DW_OP_breg7 8
        assert_eq!(rbp_plus(&[0x76, 0x68, 0x06]), Some((-24, true)));
        assert_eq!(rbp_plus(&[0x76, 0x00]), Some((0, false)));
        assert_eq!(rbp_plus(&[0x77, 0x08]), None);
        assert_eq!(rbp_plus(&[0x76, 0x68, 0x06, 0x06]), None);
        assert_eq!(rbp_plus(&[]), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [&b""[..], b"\x7fELF", &[0u8; 64][..], &[0xffu8; 4096][..]] {
            assert!(parse_elf(data).is_err());
        }
    }

    /// The test binary itself: a real, large .eh_frame.
    #[test]
    fn own_binary_has_a_table() {
        let data = std::fs::read("/proc/self/exe").unwrap();
        let info = parse_elf(&data).unwrap();
        let table = &info.table;
        assert!(table.rows.len() > 1000, "{}", table.rows.len());
        assert!(!info.segments.is_empty());
        for page in &table.pages {
            let rows =
                &table.rows[page.first_row as usize..(page.first_row + page.row_count) as usize];
            assert!(rows.windows(2).all(|w| w[0].pc < w[1].pc));
        }
        assert!(
            table.rules.iter().any(|r| r.cfa_type == CfaRule::End as u8),
            "_start marks the outermost frame"
        );
        // main's first instruction: the return address is right at rsp.
        let main = main as *const () as u64;
        let exe_base = own_load_bias();
        assert_eq!(table.rule_at(main - exe_base), Some(Rule::rsp(8)));
    }

    fn main() {}

    /// How far this executable was moved from its ELF addresses.
    fn own_load_bias() -> u64 {
        // SAFETY: getauxval has no preconditions.
        let phdr = unsafe { libc::getauxval(libc::AT_PHDR) };
        let data = std::fs::read("/proc/self/exe").unwrap();
        let elf = ElfFile64::<LittleEndianObject>::parse(&*data).unwrap();
        let header = elf.elf_header();
        phdr - header.e_phoff.get(elf.endian())
    }
}
