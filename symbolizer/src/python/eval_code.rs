//! Where the interpreter's eval loop is in its module: the code of
//! `_PyEval_EvalFrameDefault` and the parts the compiler moved out of it.
//!
//! Stacks are merged by putting each C call of the eval loop's Python frames
//! in place of its native frame, so that frame must be recognised. With a
//! symbol table it is found by name. Debian's 3.14 and 3.15 are stripped and
//! GCC splits the function: the exported symbol covers 1 KiB of entry code,
//! and the loop itself runs in `_PyEval_EvalFrameDefault.cold`, 80 KiB with
//! no name at all. That part is found the way it is reached: the exported
//! code jumps into it, and the call frame information says how far the code
//! at each jump target reaches.

use std::ops::Range;

use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
use iced_x86::{Decoder, DecoderOptions, FlowControl, OpKind};
use object::{Object, ObjectSection, ObjectSymbol};

/// The exported entry of the eval loop.
const EVAL_SYMBOL: &str = "_PyEval_EvalFrameDefault";
/// Most bytes of the entry decoded (its whole code in every build seen).
const MAX_ENTRY_BYTES: u64 = 1 << 20;
/// Most separate parts taken (jump targets in distinct FDEs).
const MAX_PARTS: usize = 8;

/// Link-time address ranges of the eval loop's code, the exported function
/// first; empty without the symbol.
pub fn eval_code(elf: &object::File<'_>) -> Vec<Range<u64>> {
    let Some(entry) = entry_range(elf) else {
        return Vec::new();
    };
    let mut ranges = vec![entry.clone()];
    let targets = jump_targets_outside(elf, &entry);
    if targets.is_empty() {
        return ranges;
    }
    for part in fde_ranges_holding(elf, &targets) {
        if !ranges
            .iter()
            .any(|r| r.start < part.end && part.start < r.end)
        {
            ranges.push(part);
        }
    }
    ranges
}

fn entry_range(elf: &object::File<'_>) -> Option<Range<u64>> {
    let symbol = elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .find(|s| s.name() == Ok(EVAL_SYMBOL) && s.address() != 0 && s.size() != 0)?;
    let size = symbol.size().min(MAX_ENTRY_BYTES);
    Some(symbol.address()..symbol.address() + size)
}

/// Targets of direct jumps (conditional or not) from `code` to outside it.
fn jump_targets_outside(elf: &object::File<'_>, code: &Range<u64>) -> Vec<u64> {
    let Some(bytes) = bytes_at(elf, code) else {
        return Vec::new();
    };
    let mut decoder = Decoder::with_ip(64, bytes, code.start, DecoderOptions::NONE);
    let mut targets = Vec::new();
    for instruction in &mut decoder {
        let jumps = matches!(
            instruction.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
        );
        if !jumps || instruction.op0_kind() != OpKind::NearBranch64 {
            continue;
        }
        let target = instruction.near_branch_target();
        if !code.contains(&target) && !targets.contains(&target) {
            targets.push(target);
        }
    }
    targets
}

/// The bytes of `range` from the section holding it.
fn bytes_at<'a>(elf: &'a object::File<'_>, range: &Range<u64>) -> Option<&'a [u8]> {
    let section = elf.sections().find(|s| {
        s.address() <= range.start && range.end <= s.address().saturating_add(s.size())
    })?;
    let data = section.data().ok()?;
    let from = usize::try_from(range.start - section.address()).ok()?;
    let to = usize::try_from(range.end - section.address()).ok()?;
    data.get(from..to)
}

/// The ranges of the FDEs in `.eh_frame` that hold any of `addresses`.
fn fde_ranges_holding(elf: &object::File<'_>, addresses: &[u64]) -> Vec<Range<u64>> {
    let Some(section) = elf.section_by_name(".eh_frame") else {
        return Vec::new();
    };
    let Ok(data) = section.data() else {
        return Vec::new();
    };
    let eh_frame = EhFrame::new(data, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(section.address());
    if let Some(text) = elf.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    let mut ranges = Vec::new();
    let mut entries = eh_frame.entries(&bases);
    // A malformed entry ends the scan: what was found so far stands.
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) =
            partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
        else {
            continue;
        };
        let range = fde.initial_address()..fde.end_address();
        if addresses.iter().any(|a| range.contains(a)) {
            ranges.push(range);
            if ranges.len() >= MAX_PARTS {
                break;
            }
        }
    }
    ranges
}
