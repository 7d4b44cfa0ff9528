//! Kernel symbols: the [`KernelSymbolSource`] interface, `/proc/kallsyms`
//! (the portable source), and the parser for the kernel's own `%pS` format.

use std::path::{Path, PathBuf};

use crate::Error;

/// A kernel function an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFunction {
    pub name: String,
    /// `None` for the core kernel, `Some("ext4")` for a module.
    pub module: Option<String>,
}

/// Names kernel addresses. [`Kallsyms`] reads `/proc/kallsyms`. The profiler
/// plugs in a cheaper source that asks the kernel about just the addresses it
/// has.
pub trait KernelSymbolSource {
    /// One entry per address, in order; `None` when no symbol covers it.
    fn lookup(&mut self, addresses: &[u64]) -> Result<Vec<Option<KernelFunction>>, Error>;

    /// For logs: where the names come from.
    fn describe(&self) -> &'static str;
}

/// `/proc/kallsyms`, read in full on first use.
#[derive(Debug)]
pub struct Kallsyms {
    path: PathBuf,
    table: Option<KernelSymbols>,
}

impl Kallsyms {
    pub const DESCRIPTION: &'static str = "/proc/kallsyms";

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            table: None,
        }
    }
}

impl KernelSymbolSource for Kallsyms {
    fn lookup(&mut self, addresses: &[u64]) -> Result<Vec<Option<KernelFunction>>, Error> {
        let table = match &mut self.table {
            Some(table) => table,
            None => self.table.insert(KernelSymbols::load(&self.path)?),
        };
        Ok(addresses
            .iter()
            .map(|&a| {
                table.lookup(a).map(|s| KernelFunction {
                    name: s.name.to_owned(),
                    module: s.module.map(str::to_owned),
                })
            })
            .collect())
    }

    fn describe(&self) -> &'static str {
        Self::DESCRIPTION
    }
}

/// Parses the kernel's `%pS` rendering: `vfs_read+0x12/0x1a0`,
/// `ext4_file_read_iter+0x4a/0x1b0 [ext4]`. A bare hex address means the
/// kernel has no symbol there.
pub fn parse_symbol_offset(text: &str) -> Option<KernelFunction> {
    let text = text.trim();
    let (symbol, module) = match text.strip_suffix(']').and_then(|t| t.rsplit_once(" [")) {
        Some((symbol, module)) => (symbol, Some(module.to_owned())),
        None => (text, None),
    };
    let (name, offset) = symbol.rsplit_once('+')?;
    if name.is_empty() || !offset.starts_with("0x") {
        return None;
    }
    Some(KernelFunction {
        name: name.to_owned(),
        module,
    })
}

/// One kernel text symbol, borrowed from [`KernelSymbols`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSymbol<'a> {
    pub address: u64,
    pub name: &'a str,
    /// `None` for the core kernel, `Some("ext4")` for a module.
    pub module: Option<&'a str>,
}

/// Where a symbol's name lives in the arena.
#[derive(Debug, Clone, Copy)]
struct Entry {
    address: u64,
    name_start: u32,
    name_len: u32,
    /// 0 for the core kernel, else index + 1 into `modules`.
    module: u32,
}

/// Kernel text symbols sorted by address. Names share one string arena:
/// kallsyms has over 100k symbols, and one allocation each would cost more
/// than the parsing.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    names: String,
    modules: Vec<String>,
    entries: Vec<Entry>,
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms` (or any file in its format).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        let symbols = Self::parse(&text);
        if symbols.is_empty() {
            return Err(Error::KernelAddressesHidden {
                path: path.to_owned(),
            });
        }
        Ok(symbols)
    }

    /// Parses kallsyms text; malformed lines and non-text symbols are skipped.
    /// All-zero addresses (hidden by `kptr_restrict`) are dropped.
    pub fn parse(text: &str) -> Self {
        let mut symbols = Self {
            names: String::with_capacity(text.len() / 2),
            ..Self::default()
        };
        for line in text.lines() {
            symbols.add_line(line);
        }
        symbols.entries.sort_by_key(|e| e.address);
        symbols.entries.dedup_by_key(|e| e.address);
        symbols
    }

    fn add_line(&mut self, line: &str) {
        let mut parts = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else {
            return;
        };
        if address == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
            return;
        }
        let module = match parts
            .next()
            .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
        {
            None => 0,
            Some(m) => match self.modules.iter().rposition(|known| known == m) {
                Some(i) => i + 1,
                None => {
                    self.modules.push(m.to_owned());
                    self.modules.len()
                }
            },
        };
        let (Ok(name_start), Ok(name_len), Ok(module)) = (
            u32::try_from(self.names.len()),
            u32::try_from(name.len()),
            u32::try_from(module),
        ) else {
            return; // over 4 GiB of names: not a real kallsyms
        };
        self.names.push_str(name);
        self.entries.push(Entry {
            address,
            name_start,
            name_len,
            module,
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The symbol containing `address`: the closest one at or below it.
    pub fn lookup(&self, address: u64) -> Option<KernelSymbol<'_>> {
        let idx = self.entries.partition_point(|e| e.address <= address);
        let entry = self.entries.get(idx.checked_sub(1)?)?;
        // Past the last symbol there is no telling where text ends: refuse
        // anything implausibly far away.
        if idx == self.entries.len() && address - entry.address > 1 << 20 {
            return None;
        }
        let start = entry.name_start as usize;
        Some(KernelSymbol {
            address: entry.address,
            name: &self.names[start..start + entry.name_len as usize],
            module: entry
                .module
                .checked_sub(1)
                .and_then(|i| self.modules.get(i as usize))
                .map(String::as_str),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81001000 t do_one
ffffffff81002000 D some_data
ffffffff81003000 T do_two
garbage
ffffffffc0000000 t ext4_read [ext4]
";

    #[test]
    fn finds_enclosing_symbol_and_module() {
        let syms = KernelSymbols::parse(TEXT);
        assert_eq!(syms.len(), 4);
        assert_eq!(syms.lookup(0xffffffff81001010).unwrap().name, "do_one");
        // data symbols are not text: the address belongs to do_one still
        assert_eq!(syms.lookup(0xffffffff81002010).unwrap().name, "do_one");
        let ext4 = syms.lookup(0xffffffffc0000100).unwrap();
        assert_eq!(ext4.name, "ext4_read");
        assert_eq!(ext4.module, Some("ext4"));
        assert!(syms.lookup(0x1000).is_none());
        assert!(syms.lookup(0xffffffffc8000000).is_none());
    }

    #[test]
    fn parses_the_kernels_symbol_offset_format() {
        let f = parse_symbol_offset("vfs_read+0x12/0x1a0").unwrap();
        assert_eq!((f.name.as_str(), f.module), ("vfs_read", None));
        let f = parse_symbol_offset("ext4_read+0x4/0x80 [ext4]").unwrap();
        assert_eq!(
            (f.name.as_str(), f.module.as_deref()),
            ("ext4_read", Some("ext4"))
        );
        assert_eq!(parse_symbol_offset("0xffffffffc0001234"), None);
        assert_eq!(parse_symbol_offset(""), None);
        assert_eq!(parse_symbol_offset("+0x1/0x2"), None);
    }

    #[test]
    fn kallsyms_source_looks_up_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kallsyms");
        std::fs::write(&path, TEXT).unwrap();
        let mut source = Kallsyms::new(&path);
        let found = source
            .lookup(&[0xffffffff81001010, 0x10, 0xffffffffc0000001])
            .unwrap();
        assert_eq!(found[0].as_ref().unwrap().name, "do_one");
        assert_eq!(found[1], None);
        assert_eq!(found[2].as_ref().unwrap().module.as_deref(), Some("ext4"));
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kallsyms");
        std::fs::write(&path, "0000000000000000 T _stext\n").unwrap();
        assert!(matches!(
            KernelSymbols::load(&path),
            Err(Error::KernelAddressesHidden { .. })
        ));
    }
}
