//! What an address resolves to.

/// One function at an address: the function the address is in, or one that
/// the compiler inlined into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionFrame {
    /// Demangled name (`std::vector<int>::push_back`, `core::fmt::write`).
    pub name: String,
    /// Name as stored in the binary (`_ZNSt6vector...`); equal to `name` for C.
    pub system_name: String,
    /// Source file, when debug info has it.
    pub file: Option<String>,
    /// Source line, when debug info has it.
    pub line: Option<u32>,
    /// True for a function inlined into its caller (not a real stack frame).
    pub inlined: bool,
}

impl FunctionFrame {
    /// A frame that only has a name (ELF symbol, kallsyms, perf map).
    pub fn named(system_name: &str) -> Self {
        Self {
            name: crate::demangle(system_name),
            system_name: system_name.to_owned(),
            file: None,
            line: None,
            inlined: false,
        }
    }
}

/// Why an address has no name. Data, not an error: the frame is kept as
/// `module+0xoffset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnknownReason {
    /// The address is in no mapping of the process.
    Unmapped,
    /// The mapping's file could not be opened (gone, or no permission).
    ModuleUnavailable,
    /// The file has no symbol covering the address.
    NoSymbol,
    /// The file could not be parsed (corrupt or not ELF).
    BadModule,
}

/// The outcome of symbolizing one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Innermost first: inlined frames, then the function that contains them.
    Symbols(Vec<FunctionFrame>),
    Unknown(UnknownReason),
}
