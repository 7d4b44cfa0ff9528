//! Addresses as the unwinder found them, before symbolization.

/// An address taken from a stack, in the address space of the sampled process
/// (or of the kernel), tagged with how it was obtained.
///
/// Every frame but the innermost is a return address: it points just after the
/// call instruction and may already belong to the next line or function, so it
/// is looked up one byte earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameAddress {
    /// The exact instruction that was executing (the innermost frame).
    InstructionPointer(u64),
    /// A return address found on the stack (every outer frame).
    ReturnAddress(u64),
}

impl FrameAddress {
    /// Builds the address of frame `depth` (0 is innermost) of a stack.
    pub fn at_depth(address: u64, depth: usize) -> Self {
        if depth == 0 {
            Self::InstructionPointer(address)
        } else {
            Self::ReturnAddress(address)
        }
    }

    /// The address as it appears in the stack.
    pub fn raw(self) -> u64 {
        match self {
            Self::InstructionPointer(a) | Self::ReturnAddress(a) => a,
        }
    }

    /// The address to look up: inside the call instruction for return addresses.
    pub fn lookup(self) -> u64 {
        match self {
            Self::InstructionPointer(a) => a,
            Self::ReturnAddress(a) => a.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_addresses_are_looked_up_one_byte_earlier() {
        assert_eq!(FrameAddress::at_depth(0x1000, 0).lookup(), 0x1000);
        assert_eq!(FrameAddress::at_depth(0x1000, 1).lookup(), 0xfff);
        assert_eq!(FrameAddress::ReturnAddress(0).lookup(), 0);
    }
}
