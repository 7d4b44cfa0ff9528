//! Unwind rows for Go code, from `.gopclntab`: Go emits no `.eh_frame`,
//! but the runtime's own traceback needs, for every pc of every function,
//! how far the stack pointer is below its value at entry (the `pcsp`
//! table), and the linker keeps that table even in stripped binaries.
//!
//! At a pc where the function is `d` bytes below its entry stack pointer,
//! the caller's frame is at CFA = rsp + d + 8 (the return address is just
//! below it). Go saves the caller's frame pointer right below the return
//! address in every function with a frame, so the caller's rbp is at
//! CFA - 16 once `d > 0`, and untouched in frameless functions. A
//! frameless leaf is what frame pointers cannot walk: its caller's frame
//! has no rbp of its own, so a frame-pointer walk skips the caller.
//!
//! The walk ends at the bottom of a goroutine (`runtime.goexit`) and of a
//! thread (`runtime.mstart`, `runtime.rt0_go`). Functions that switch
//! stacks (`runtime.systemstack`, `mcall`, `morestack`, `asmcgocall`,
//! `cgocallback`, the signal trampolines) get the invalid rule, which makes
//! the BPF unwinder follow frame pointers there, as it did before Go had
//! rows: their stack pointer belongs to another stack. The one switch
//! unwound exactly is cgo's: `runtime.asmcgocall` saves on the system stack
//! how to get back to the goroutine's (`CfaRule::GoCgo`), so C code called
//! from Go (unwound with its own `.eh_frame`) leads back to the Go caller.

use symbolizer::{GoSpan, GoTable};

use super::layout::{CfaRule, Rule};

/// The bottom frame of a goroutine or a thread.
const OUTERMOST: [&[u8]; 3] = [b"runtime.goexit", b"runtime.mstart", b"runtime.rt0_go"];

/// Where cgo calls C: it switches to the system stack, which its pcsp
/// table does not record (runtime/asm_amd64.s). Go 1.22 and later (measured) push rbp
/// and keep the entry frame in it across the call (steps 0 and 8 only):
/// CFA = rbp + 16. Go 1.18 and 1.20 push nothing (one step, 0) and save at
/// 40(SP) on the system stack the goroutine's depth, then its g. Its ABI
/// wrapper of the same name (a frame of its own) is neither. The layout is
/// told from the steps, not from the version (1.20: one step; 1.22: two).
const ASMCGOCALL: &[u8] = b"runtime.asmcgocall";
const ASMCGOCALL_DEPTH_SLOT: i32 = 40;

/// Functions whose stack pointer moves to another stack.
const STACK_SWITCHES: [&[u8]; 8] = [
    b"runtime.systemstack",
    b"runtime.systemstack_switch",
    b"runtime.mcall",
    b"runtime.morestack",
    b"runtime.morestack_noctxt",
    b"runtime.cgocallback",
    b"runtime.sigtramp",
    b"runtime.cgoSigtramp",
];

/// A frame larger than this is not one Go makes (its stack limit for one
/// frame is far smaller): the table is not trusted there.
const MAX_FRAME: i32 = 1 << 28;

/// A Go table and its functions, in address order.
pub struct GoRows {
    table: GoTable,
    steps: Vec<(u64, i32)>,
}

impl GoRows {
    pub fn new(table: GoTable) -> Self {
        Self {
            table,
            steps: Vec::new(),
        }
    }

    /// Every function's code range, in address order.
    pub fn spans(&self) -> impl Iterator<Item = GoSpan> + '_ {
        self.table.spans()
    }

    /// The rows of one function: (start, end, rule), in address order.
    /// False when its table is malformed (nothing is pushed then).
    pub fn rows(&mut self, span: &GoSpan, out: &mut Vec<(u64, u64, Rule)>) -> bool {
        let name = self.table.span_name(span).unwrap_or_default();
        let name = name.strip_suffix(b".abi0").unwrap_or(name);
        if OUTERMOST.contains(&name) {
            out.push((span.start, span.end, Rule::END));
            return true;
        }
        if STACK_SWITCHES.contains(&name) {
            out.push((span.start, span.end, Rule::INVALID));
            return true;
        }
        if self.table.sp_deltas(span, &mut self.steps).is_none() {
            return false;
        }
        let cgo = (name == ASMCGOCALL)
            .then(|| asmcgocall_rule(&self.steps))
            .flatten();
        for (i, &(pc, delta)) in self.steps.iter().enumerate() {
            let end = self.steps.get(i + 1).map_or(span.end, |next| next.0);
            let end = end.min(span.end);
            if end <= pc {
                continue;
            }
            let rule = match cgo {
                Some((deepest, rule)) if delta == deepest => rule,
                _ => rule_for(delta),
            };
            out.push((pc, end, rule));
        }
        true
    }
}

/// The `GoCgo` rule of an `asmcgocall` whose steps match a known layout,
/// with the step it applies to.
fn asmcgocall_rule(steps: &[(u64, i32)]) -> Option<(i32, Rule)> {
    let cgo = Rule::simple(CfaRule::GoCgo);
    match steps.iter().map(|s| s.1).max()? {
        8 => Some((
            8,
            Rule {
                cfa_offset: 16,
                ..cgo
            }
            .rbp_saved_at(-16),
        )),
        0 => Some((
            0,
            Rule {
                cfa_offset: ASMCGOCALL_DEPTH_SLOT,
                ..cgo
            },
        )),
        _ => None,
    }
}

/// The rule at a pc `delta` bytes below the entry stack pointer.
fn rule_for(delta: i32) -> Rule {
    if !(0..=MAX_FRAME).contains(&delta) {
        return Rule::UNSUPPORTED;
    }
    let rule = Rule::rsp(delta + 8);
    if delta > 0 {
        rule.rbp_saved_at(-16)
    } else {
        rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::layout::RbpRule;

    #[test]
    fn asmcgocall_layouts_of_each_go_version() {
        // Go 1.18 and 1.20 (measured): one step.
        let (deepest, rule) = asmcgocall_rule(&[(0x458880, 0)]).unwrap();
        assert_eq!((deepest, rule.cfa_offset), (0, 40));
        assert_eq!(rule.rbp_type, RbpRule::Unchanged as u8);
        // Go 1.22 (measured): PUSHQ BP, then 8 to the end but for the RET.
        let steps = [(0x0, 0), (0x1, 8), (0x82, 0), (0x83, 8), (0xa9, 0)];
        let (deepest, rule) = asmcgocall_rule(&steps).unwrap();
        assert_eq!((deepest, rule.cfa_offset, rule.rbp_offset), (8, 16, -16));
        // Its ABI wrapper: a frame of 0x20.
        assert!(asmcgocall_rule(&[(0, 0), (1, 8), (8, 32), (0x2b, 8), (0x2c, 0)]).is_none());
    }

    #[test]
    fn frameless_code_keeps_rbp_and_framed_code_saved_it() {
        let leaf = rule_for(0);
        assert_eq!(
            (leaf.cfa_type, leaf.cfa_offset, leaf.rbp_type),
            (CfaRule::Rsp as u8, 8, RbpRule::Unchanged as u8)
        );
        let framed = rule_for(24);
        assert_eq!(
            (framed.cfa_offset, framed.rbp_type, framed.rbp_offset),
            (32, RbpRule::Offset as u8, -16)
        );
        assert_eq!(rule_for(-1), Rule::UNSUPPORTED);
        assert_eq!(rule_for(i32::MAX), Rule::UNSUPPORTED);
    }
}
