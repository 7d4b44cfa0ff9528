//! Kernel symbols from `/proc/kallsyms`, with the module each one belongs to.

use std::path::Path;

use crate::Error;

/// One kernel text symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSymbol {
    pub address: u64,
    pub name: String,
    /// `None` for the core kernel, `Some("ext4")` for a module.
    pub module: Option<String>,
}

/// Kernel text symbols sorted by address.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    symbols: Vec<KernelSymbol>,
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms` (or any file in its format).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        let symbols = Self::parse(&text);
        if symbols.symbols.is_empty() {
            return Err(Error::KernelAddressesHidden {
                path: path.to_owned(),
            });
        }
        Ok(symbols)
    }

    /// Parses kallsyms text; malformed lines and non-text symbols are skipped.
    /// All-zero addresses (hidden by `kptr_restrict`) are dropped.
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<KernelSymbol> = text.lines().filter_map(parse_line).collect();
        symbols.sort_by_key(|s| s.address);
        symbols.dedup_by_key(|s| s.address);
        Self { symbols }
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol containing `address`: the closest one at or below it.
    pub fn lookup(&self, address: u64) -> Option<&KernelSymbol> {
        let idx = self.symbols.partition_point(|s| s.address <= address);
        let symbol = self.symbols.get(idx.checked_sub(1)?)?;
        // Past the last symbol there is no telling where text ends: refuse
        // anything implausibly far away.
        if idx == self.symbols.len() && address - symbol.address > 1 << 20 {
            return None;
        }
        Some(symbol)
    }
}

fn parse_line(line: &str) -> Option<KernelSymbol> {
    let mut parts = line.split_ascii_whitespace();
    let address = u64::from_str_radix(parts.next()?, 16).ok()?;
    let kind = parts.next()?;
    let name = parts.next()?;
    let module = parts
        .next()
        .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
        .map(str::to_owned);
    let is_text = matches!(kind, "t" | "T" | "w" | "W");
    (address != 0 && is_text).then(|| KernelSymbol {
        address,
        name: name.to_owned(),
        module,
    })
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
        assert_eq!(ext4.module.as_deref(), Some("ext4"));
        assert!(syms.lookup(0x1000).is_none());
        assert!(syms.lookup(0xffffffffc8000000).is_none());
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
