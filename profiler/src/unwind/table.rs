//! Unwind tables: an ELF file's `.eh_frame` (or `.debug_frame`) turned into
//! sorted [`Row`]s the BPF unwinder can binary-search.
//!
//! Every FDE's CFI program is run with gimli; each resulting row becomes one
//! compact rule (CFA from rsp or rbp plus an offset, where rbp was saved).
//! Consecutive rows with the same rule are merged, and a gap between FDEs
//! gets an [`CfaRule::Invalid`] row so an address there is never unwound
//! with its neighbour's rule. The file is untrusted: a malformed FDE is
//! skipped and counted, never a panic.

use gimli::{
    BaseAddresses, CfaRule as GimliCfa, CieOrFde, DebugFrame, EhFrame, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection};

use super::layout::{CfaRule, RbpRule, Row};

/// A module's table. Row pcs are relative to `base`, an ELF virtual address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwindTable {
    pub base: u64,
    pub rows: Vec<Row>,
    /// FDEs that did not parse or run (their addresses stay uncovered).
    pub bad_entries: usize,
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
    #[error("code spans more than 4 GiB ({0:#x} bytes): row pcs are 32-bit")]
    TooLarge(u64),
}

/// One FDE row, before merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
    rule: Rule,
}

/// The rule of a row, without its pc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    cfa: CfaRule,
    cfa_offset: i32,
    rbp: RbpRule,
    rbp_offset: i16,
}

impl Rule {
    const INVALID: Rule = Rule::simple(CfaRule::Invalid);
    const UNSUPPORTED: Rule = Rule::simple(CfaRule::Unsupported);
    const END: Rule = Rule::simple(CfaRule::End);

    const fn simple(cfa: CfaRule) -> Self {
        Self {
            cfa,
            cfa_offset: 0,
            rbp: RbpRule::Unchanged,
            rbp_offset: 0,
        }
    }
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

/// Reads the load segments and the unwind table of an ELF file.
pub fn parse_elf(data: &[u8]) -> Result<ElfUnwindInfo, TableError> {
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
    let mut spans = Vec::new();
    let mut bad = 0;
    let mut found = false;
    if let Some(section) = elf.section_by_name(".eh_frame") {
        if let Ok(bytes) = section.data() {
            found = true;
            let bases = bases.clone().set_eh_frame(section.address());
            let eh_frame = EhFrame::new(bytes, LittleEndian);
            bad += collect_spans(&eh_frame, &bases, &mut spans);
        }
    }
    // .debug_frame only where .eh_frame has nothing (rare: some toolchains
    // emit only .debug_frame; .eh_frame wins where both cover code).
    if spans.is_empty() {
        if let Some(section) = elf.section_by_name(".debug_frame") {
            if let Ok(bytes) = section.data() {
                found = true;
                let mut debug_frame = DebugFrame::new(bytes, LittleEndian);
                debug_frame.set_address_size(8);
                bad += collect_spans(&debug_frame, &bases, &mut spans);
            }
        }
    }
    if !found {
        return Err(TableError::NoCfi);
    }
    let table = build_table(spans, bad)?;
    Ok(ElfUnwindInfo { table, segments })
}

type LittleEndianObject = object::LittleEndian;

/// Runs every FDE of a section; returns how many failed.
fn collect_spans<'d, S>(section: &S, bases: &BaseAddresses, spans: &mut Vec<Span>) -> usize
where
    S: UnwindSection<gimli::EndianSlice<'d, LittleEndian>>,
{
    let mut bad = 0;
    let mut ctx = Box::new(UnwindContext::new());
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
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde =
            match partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset)) {
                Ok(fde) => fde,
                Err(_) => {
                    bad += 1;
                    continue;
                }
            };
        let before = spans.len();
        let ok = (|| -> gimli::Result<()> {
            let mut table = fde.rows(section, bases, &mut ctx)?;
            while let Some(row) = table.next_row()? {
                if row.end_address() <= row.start_address() {
                    continue;
                }
                spans.push(Span {
                    start: row.start_address(),
                    end: row.end_address(),
                    rule: convert(row, section),
                });
            }
            Ok(())
        })();
        if ok.is_err() {
            spans.truncate(before);
            bad += 1;
        }
    }
    bad
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
            _ => return Rule::UNSUPPORTED,
        },
    };
    let (rbp, rbp_offset) = match row.register(X86_64::RBP) {
        Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
            Ok(offset) => (RbpRule::Offset, offset),
            Err(_) => return Rule::UNSUPPORTED,
        },
        // Same value, undefined, or a rule we do not follow: rbp stays as it
        // is; a later rbp-based CFA that goes wrong stops with an error.
        _ => (RbpRule::Unchanged, 0),
    };
    Rule {
        cfa,
        cfa_offset,
        rbp,
        rbp_offset,
    }
}

/// Sorts spans into rows: merged where the rule repeats, with an Invalid
/// row wherever coverage ends.
fn build_table(mut spans: Vec<Span>, bad_entries: usize) -> Result<UnwindTable, TableError> {
    spans.sort_by_key(|s| (s.start, s.end));
    let Some(first) = spans.first() else {
        return Err(TableError::Empty(bad_entries));
    };
    let base = first.start;
    let last_end = spans.iter().map(|s| s.end).max().unwrap_or(base);
    if last_end - base > u64::from(u32::MAX) {
        return Err(TableError::TooLarge(last_end - base));
    }
    let mut rows: Vec<Row> = Vec::with_capacity(spans.len() + 1);
    let mut covered_to = base;
    let mut last_rule: Option<Rule> = None;
    let push = |rows: &mut Vec<Row>, at: u64, rule: Rule, last: &mut Option<Rule>| {
        if *last == Some(rule) {
            return;
        }
        let pc = (at - base) as u32;
        // Two rules at one pc (overlapping FDEs): the later one wins.
        if rows.last().is_some_and(|r| r.pc == pc) {
            rows.pop();
        }
        rows.push(Row {
            pc,
            cfa_offset: rule.cfa_offset,
            rbp_offset: rule.rbp_offset,
            cfa_type: rule.cfa as u8,
            rbp_type: rule.rbp as u8,
            reserved: 0,
        });
        *last = Some(rule);
    };
    for span in &spans {
        if span.start < covered_to {
            // Overlaps what is covered already (broken or duplicate FDEs):
            // the first rule for an address stands.
            if span.end <= covered_to {
                continue;
            }
        } else if span.start > covered_to {
            push(&mut rows, covered_to, Rule::INVALID, &mut last_rule);
        }
        let at = span.start.max(covered_to);
        push(&mut rows, at, span.rule, &mut last_rule);
        covered_to = span.end;
    }
    push(&mut rows, covered_to, Rule::INVALID, &mut last_rule);
    Ok(UnwindTable {
        base,
        rows,
        bad_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsp(offset: i32) -> Rule {
        Rule {
            cfa: CfaRule::Rsp,
            cfa_offset: offset,
            rbp: RbpRule::Unchanged,
            rbp_offset: 0,
        }
    }

    fn span(start: u64, end: u64, rule: Rule) -> Span {
        Span { start, end, rule }
    }

    #[test]
    fn rows_merge_repeats_and_mark_gaps() {
        let spans = vec![
            span(0x1010, 0x1020, rsp(16)),
            span(0x1000, 0x1004, rsp(8)),
            span(0x1004, 0x1010, rsp(16)), // same rule as the next: merged
            span(0x1030, 0x1040, rsp(8)),  // after a gap
        ];
        let table = build_table(spans, 0).unwrap();
        assert_eq!(table.base, 0x1000);
        let summary: Vec<(u32, u8, i32)> = table
            .rows
            .iter()
            .map(|r| (r.pc, r.cfa_type, r.cfa_offset))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0x0, CfaRule::Rsp as u8, 8),
                (0x4, CfaRule::Rsp as u8, 16),
                (0x20, CfaRule::Invalid as u8, 0),
                (0x30, CfaRule::Rsp as u8, 8),
                (0x40, CfaRule::Invalid as u8, 0),
            ]
        );
    }

    #[test]
    fn overlapping_spans_cover_each_address_once() {
        let spans = vec![
            span(0x100, 0x200, rsp(8)),
            span(0x100, 0x180, rsp(32)),
            span(0x180, 0x280, rsp(24)),
        ];
        let table = build_table(spans, 0).unwrap();
        let pcs: Vec<(u32, i32)> = table.rows.iter().map(|r| (r.pc, r.cfa_offset)).collect();
        // [0x100,0x180) sorts first (same start, shorter); [0x100,0x200)
        // only adds what is not covered yet, and so on.
        assert_eq!(pcs, vec![(0x0, 32), (0x80, 8), (0x100, 24), (0x180, 0)]);
    }

    #[test]
    fn empty_and_huge_tables_are_errors() {
        assert!(matches!(build_table(vec![], 3), Err(TableError::Empty(3))));
        let huge = vec![span(0, 1 << 33, rsp(8))];
        assert!(matches!(build_table(huge, 0), Err(TableError::TooLarge(_))));
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
        assert!(info.table.rows.len() > 1000, "{}", info.table.rows.len());
        assert!(!info.segments.is_empty());
        assert!(info.table.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        let end_rows = info
            .table
            .rows
            .iter()
            .filter(|r| r.cfa_type == CfaRule::End as u8)
            .count();
        assert!(end_rows >= 1, "_start marks the outermost frame");
    }
}
