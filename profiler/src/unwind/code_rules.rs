//! Rules for code without CFI, read from its machine code.
//!
//! Hand-written assembly (MKL's GEMM kernels inside libtorch_cpu, parts of
//! OpenBLAS, crypto routines) often has no FDE, so neither DWARF unwinders
//! nor frame pointers get past it. Such code still follows a simple shape:
//! a prologue that pushes registers or moves rsp down, a body that leaves rsp
//! alone, and epilogues that undo the prologue before `ret`. One pass over
//! the instructions (iced-x86) tracks where the canonical frame address is
//! at every instruction:
//! - `push`/`pop`, `sub`/`add rsp, imm`, `lea rsp, [rsp + d]` move it
//!   relative to rsp;
//! - `mov rbp, rsp` (after `push rbp`) switches to an rbp-based CFA, and
//!   `leave`, `mov rsp, rbp` or `lea rsp, [rbp + d]` switch back;
//! - where the caller's rbp was saved (`push rbp` or `mov [rsp + d], rbp`);
//! - a forward jump carries its state to its target, which is where the code
//!   after an epilogue's `ret` continues; code reached only after a `ret` or
//!   `jmp` with no jump into it starts a new function (CFA = rsp + 8).
//!
//! Anything else that writes rsp while the CFA depends on it (`and rsp,
//! -64`, `mov rsp, rax`) makes the rule unknown: those addresses get the
//! invalid rule (frame pointers) until the next function starts.

use rustc_hash::FxHashMap;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

use super::layout::{CfaRule, Rule};

/// Where the CFA is, before an instruction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    cfa: Cfa,
    /// The caller's rbp is saved at CFA + this offset.
    rbp_saved: Option<i16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cfa {
    Rsp(i32),
    Rbp(i32),
    Unknown,
}

impl State {
    const ENTRY: State = State {
        cfa: Cfa::Rsp(8),
        rbp_saved: None,
    };

    fn rule(self) -> Rule {
        let rule = match self.cfa {
            Cfa::Rsp(offset) => Rule::rsp(offset),
            Cfa::Rbp(offset) => Rule {
                cfa_type: CfaRule::Rbp as u8,
                ..Rule::rsp(offset)
            },
            Cfa::Unknown => return Rule::INVALID,
        };
        match self.rbp_saved {
            Some(offset) => rule.rbp_saved_at(offset),
            None => rule,
        }
    }
}

/// What the pass found, for the table's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeRulesStats {
    /// Bytes of code given rules this way.
    pub bytes: u64,
    /// Instructions after which the CFA could not be followed.
    pub unknown: u64,
}

/// Calls `emit(address, rule)` for the code in `code` (which starts at
/// `address`), in address order, at every instruction whose rule differs
/// from the previous one's. The first instruction is taken as a function's
/// entry.
pub fn rules_from_code(
    code: &[u8],
    address: u64,
    mut emit: impl FnMut(u64, Rule),
) -> CodeRulesStats {
    let mut stats = CodeRulesStats {
        bytes: code.len() as u64,
        unknown: 0,
    };
    let end = address + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    // States carried by forward jumps to their targets.
    let mut targets: FxHashMap<u64, State> = FxHashMap::default();
    let mut current: Option<State> = None;
    let mut last: Option<Rule> = None;
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        let ip = instruction.ip();
        let carried = targets.remove(&ip);
        let state = current.or(carried).unwrap_or(State::ENTRY);
        let rule = if instruction.is_invalid() {
            Rule::INVALID
        } else {
            state.rule()
        };
        if last != Some(rule) {
            emit(ip, rule);
            last = Some(rule);
        }
        if instruction.is_invalid() {
            current = None;
            continue;
        }
        let after = step(&instruction, state);
        if after.is_some_and(|s| s.cfa == Cfa::Unknown) && state.cfa != Cfa::Unknown {
            stats.unknown += 1;
        }
        current = match instruction.flow_control() {
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => None,
            FlowControl::UnconditionalBranch => {
                carry(&instruction, after, end, &mut targets);
                None
            }
            FlowControl::IndirectBranch => None,
            FlowControl::ConditionalBranch => {
                carry(&instruction, after, end, &mut targets);
                after
            }
            _ => after,
        };
    }
    stats
}

/// Remembers the state a forward jump takes to its target.
fn carry(
    instruction: &Instruction,
    state: Option<State>,
    end: u64,
    targets: &mut FxHashMap<u64, State>,
) {
    let Some(state) = state else { return };
    if !matches!(
        instruction.op0_kind(),
        OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16
    ) {
        return;
    }
    let target = instruction.near_branch_target();
    if target > instruction.ip() && target < end {
        targets.entry(target).or_insert(state);
    }
}

fn is_rsp(register: Register) -> bool {
    matches!(
        register,
        Register::RSP | Register::ESP | Register::SP | Register::SPL
    )
}

fn is_rbp(register: Register) -> bool {
    matches!(
        register,
        Register::RBP | Register::EBP | Register::BP | Register::BPL
    )
}

/// `[rsp + d]` or `[rbp + d]` without an index: the displacement.
fn memory_at(instruction: &Instruction, base: Register) -> Option<i64> {
    (instruction.memory_base() == base && instruction.memory_index() == Register::None)
        .then(|| instruction.memory_displacement64() as i64)
}

/// Whether the instruction's first operand is a register it writes.
fn writes_first_register(instruction: &Instruction) -> bool {
    instruction.op_count() > 0
        && instruction.op0_kind() == OpKind::Register
        && !matches!(
            instruction.mnemonic(),
            Mnemonic::Cmp
                | Mnemonic::Test
                | Mnemonic::Push
                | Mnemonic::Bt
                | Mnemonic::Call
                | Mnemonic::Jmp
        )
}

fn shifted(cfa: Cfa, by: i64) -> Cfa {
    match cfa {
        Cfa::Rsp(offset) => i32::try_from(i64::from(offset) + by)
            .ok()
            .filter(|o| *o >= 8)
            .map_or(Cfa::Unknown, Cfa::Rsp),
        other => other,
    }
}

/// The state after `instruction`, or None when the code does not go on
/// (handled by the caller through the flow control).
fn step(instruction: &Instruction, state: State) -> Option<State> {
    let mut next = state;
    if state.cfa == Cfa::Unknown {
        return Some(next);
    }
    let op0 = if instruction.op_count() > 0 && instruction.op0_kind() == OpKind::Register {
        instruction.op0_register()
    } else {
        Register::None
    };
    match instruction.mnemonic() {
        // The callee returns to the next instruction with rsp as it was.
        Mnemonic::Call => return Some(next),
        Mnemonic::Push | Mnemonic::Pushfq => {
            next.cfa = shifted(state.cfa, 8);
            if is_rbp(op0) && state.rbp_saved.is_none() {
                if let Cfa::Rsp(offset) = next.cfa {
                    next.rbp_saved = i16::try_from(-offset).ok();
                }
            }
            return Some(next);
        }
        Mnemonic::Pop | Mnemonic::Popfq => {
            if is_rbp(op0) {
                next.rbp_saved = None;
                if let Cfa::Rbp(offset) = state.cfa {
                    // `pop rbp` with rsp where rbp points (after `mov rsp, rbp`).
                    next.cfa = Cfa::Rsp(offset - 8);
                    return Some(next);
                }
            }
            next.cfa = shifted(state.cfa, -8);
            return Some(next);
        }
        Mnemonic::Leave => {
            next.cfa = match state.cfa {
                Cfa::Rbp(offset) if offset >= 16 => Cfa::Rsp(offset - 8),
                _ => Cfa::Unknown,
            };
            next.rbp_saved = None;
            return Some(next);
        }
        _ => {}
    }
    let immediate = |operand: u32| -> Option<i64> {
        matches!(
            instruction.op_kind(operand),
            OpKind::Immediate8to64
                | OpKind::Immediate32to64
                | OpKind::Immediate8
                | OpKind::Immediate32
        )
        .then(|| instruction.immediate(operand) as i64)
    };
    // rbp saved into the frame: `mov [rsp + d], rbp`.
    if instruction.mnemonic() == Mnemonic::Mov
        && instruction.op_count() == 2
        && instruction.op0_kind() == OpKind::Memory
        && instruction.op1_kind() == OpKind::Register
        && instruction.op1_register() == Register::RBP
        && state.rbp_saved.is_none()
    {
        if let (Cfa::Rsp(offset), Some(d)) = (state.cfa, memory_at(instruction, Register::RSP)) {
            next.rbp_saved = i16::try_from(d - i64::from(offset)).ok();
        }
        return Some(next);
    }
    if is_rsp(op0) && writes_first_register(instruction) {
        next.cfa = match (instruction.mnemonic(), state.cfa) {
            (Mnemonic::Sub, cfa) if immediate(1).is_some() => {
                shifted(cfa, immediate(1).unwrap_or(0))
            }
            (Mnemonic::Add, cfa) if immediate(1).is_some() => {
                shifted(cfa, -immediate(1).unwrap_or(0))
            }
            (Mnemonic::Lea, cfa) => match (
                cfa,
                memory_at(instruction, Register::RSP),
                memory_at(instruction, Register::RBP),
            ) {
                (Cfa::Rsp(_), Some(d), _) => shifted(cfa, -d),
                (Cfa::Rbp(offset), _, Some(d)) => i32::try_from(i64::from(offset) - d)
                    .ok()
                    .filter(|o| *o >= 8)
                    .map_or(Cfa::Unknown, Cfa::Rsp),
                // rsp moved relative to itself while the CFA is rbp-based.
                (Cfa::Rbp(_), Some(_), _) => cfa,
                _ => Cfa::Unknown,
            },
            (Mnemonic::Mov, Cfa::Rbp(offset))
                if instruction.op1_kind() == OpKind::Register
                    && instruction.op1_register() == Register::RBP =>
            {
                Cfa::Rsp(offset)
            }
            // rbp holds the CFA: whatever happens to rsp does not matter.
            (_, Cfa::Rbp(offset)) => Cfa::Rbp(offset),
            _ => Cfa::Unknown,
        };
        return Some(next);
    }
    if is_rbp(op0) && writes_first_register(instruction) {
        let from_rsp = instruction.mnemonic() == Mnemonic::Mov
            && instruction.op1_kind() == OpKind::Register
            && instruction.op1_register() == Register::RSP;
        match (state.cfa, from_rsp) {
            // `mov rbp, rsp`: a frame pointer from here on.
            (Cfa::Rsp(offset), true) if op0 == Register::RBP => next.cfa = Cfa::Rbp(offset),
            // rbp reused as a plain register: an rsp-based CFA does not care.
            (Cfa::Rsp(_), _) => {
                if instruction.mnemonic() == Mnemonic::Mov
                    && instruction.op1_kind() == OpKind::Memory
                    && memory_at(instruction, Register::RSP).is_some()
                {
                    // Restoring the saved rbp.
                    next.rbp_saved = None;
                }
            }
            _ => next.cfa = Cfa::Unknown,
        }
        return Some(next);
    }
    if matches!(instruction.code(), Code::Enterq_imm16_imm8) {
        next.cfa = Cfa::Unknown;
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(code: &[u8]) -> Vec<(u64, Rule)> {
        let mut out = Vec::new();
        rules_from_code(code, 0x1000, |at, rule| out.push((at, rule)));
        out
    }

    #[test]
    fn pushes_and_stack_adjustments_move_the_cfa() {
        // push rbx; sub rsp, 0x20; nop; add rsp, 0x20; pop rbx; ret
        let code = [
            0x53, 0x48, 0x83, 0xec, 0x20, 0x90, 0x48, 0x83, 0xc4, 0x20, 0x5b, 0xc3,
        ];
        assert_eq!(
            rules(&code),
            vec![
                (0x1000, Rule::rsp(8)),
                (0x1001, Rule::rsp(16)),
                (0x1005, Rule::rsp(48)),
                (0x100a, Rule::rsp(16)),
                (0x100b, Rule::rsp(8)),
            ]
        );
    }

    #[test]
    fn a_frame_pointer_prologue_switches_to_rbp() {
        // push rbp; mov rbp, rsp; and rsp, -32; sub rsp, 64; nop; leave; ret
        let code = [
            0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xe4, 0xe0, 0x48, 0x83, 0xec, 0x40, 0x90, 0xc9,
            0xc3,
        ];
        let saved = |rule: Rule| rule.rbp_saved_at(-16);
        let rbp16 = Rule {
            cfa_type: CfaRule::Rbp as u8,
            ..saved(Rule::rsp(16))
        };
        assert_eq!(
            rules(&code),
            vec![
                (0x1000, Rule::rsp(8)),
                (0x1001, saved(Rule::rsp(16))),
                (0x1004, rbp16),
                (0x100e, Rule::rsp(8))
            ]
        );
    }

    #[test]
    fn rbp_saved_with_a_mov_is_found() {
        // sub rsp, 0x80; mov [rsp + 8], rbp; nop; mov rbp, [rsp + 8]; add rsp, 0x80; ret
        let code = [
            0x48, 0x81, 0xec, 0x80, 0x00, 0x00, 0x00, 0x48, 0x89, 0x6c, 0x24, 0x08, 0x90, 0x48,
            0x8b, 0x6c, 0x24, 0x08, 0x48, 0x81, 0xc4, 0x80, 0x00, 0x00, 0x00, 0xc3,
        ];
        assert_eq!(
            rules(&code),
            vec![
                (0x1000, Rule::rsp(8)),
                (0x1007, Rule::rsp(0x88)),
                (0x100c, Rule::rsp(0x88).rbp_saved_at(8 - 0x88)),
                (0x1012, Rule::rsp(0x88)),
                (0x1019, Rule::rsp(8)),
            ]
        );
    }

    #[test]
    fn code_after_an_early_return_keeps_the_frame() {
        // push rbx; test eax, eax; je L; pop rbx; ret; L: nop; pop rbx; ret; (next function) nop
        let code = [
            0x53, 0x85, 0xc0, 0x74, 0x02, 0x5b, 0xc3, 0x90, 0x5b, 0xc3, 0x90,
        ];
        assert_eq!(
            rules(&code),
            vec![
                (0x1000, Rule::rsp(8)),
                (0x1001, Rule::rsp(16)),
                (0x1006, Rule::rsp(8)),
                (0x1007, Rule::rsp(16)),
                (0x1009, Rule::rsp(8)),
            ]
        );
    }

    #[test]
    fn an_unknown_rsp_gives_frame_pointers_until_the_next_function() {
        // mov rax, rsp; and rsp, -64; nop; mov rsp, rax; ret; nop
        let code = [
            0x48, 0x89, 0xe0, 0x48, 0x83, 0xe4, 0xc0, 0x90, 0x48, 0x89, 0xc4, 0xc3, 0x90,
        ];
        assert_eq!(
            rules(&code),
            vec![
                (0x1000, Rule::rsp(8)),
                (0x1007, Rule::INVALID),
                (0x100c, Rule::rsp(8))
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_u64;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut previous = 0;
        rules_from_code(&bytes, 0x40_0000, |at, _| {
            assert!(at >= previous);
            previous = at;
        });
    }
}
