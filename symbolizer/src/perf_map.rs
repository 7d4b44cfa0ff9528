//! Perf maps (`/tmp/perf-PID.map`): `START SIZE name` per line, in hex, written
//! by JITs (Node's `--perf-basic-prof`, CPython's `-X perf`, the JVM's agents).
//! The file is written by the profiled process: untrusted input.

/// One JIT symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfMapSymbol {
    pub start: u64,
    pub size: u64,
    pub name: String,
}

/// A parsed perf map, sorted by start address.
#[derive(Debug, Default)]
pub struct PerfMap {
    symbols: Vec<PerfMapSymbol>,
    /// Lines that did not parse.
    pub rejected_lines: usize,
}

impl PerfMap {
    pub fn parse(text: &str) -> Self {
        let mut symbols = Vec::new();
        let mut rejected_lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_line(line) {
                Some(symbol) => symbols.push(symbol),
                None => rejected_lines += 1,
            }
        }
        // Later entries win for the same start (a JIT may re-emit code there).
        symbols.reverse();
        symbols.sort_by_key(|s: &PerfMapSymbol| s.start);
        symbols.dedup_by_key(|s| s.start);
        Self {
            symbols,
            rejected_lines,
        }
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn lookup(&self, address: u64) -> Option<&PerfMapSymbol> {
        let idx = self.symbols.partition_point(|s| s.start <= address);
        let symbol = self.symbols.get(idx.checked_sub(1)?)?;
        (address - symbol.start < symbol.size).then_some(symbol)
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

fn parse_line(line: &str) -> Option<PerfMapSymbol> {
    let mut parts = line.trim().splitn(3, ' ');
    let start = parse_hex(parts.next()?)?;
    let size = parse_hex(parts.next()?)?;
    let name = parts.next()?.trim();
    if name.is_empty() || size == 0 || start.checked_add(size).is_none() {
        return None;
    }
    Some(PerfMapSymbol {
        start,
        size,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let map = PerfMap::parse(
            "1000 10 LazyCompile:*fib /app/x.js:3\n\
             0x2000 0x20 py::handler:/app/x.py\n\
             not a line\n\
             3000 zz broken\n\
             ffffffffffffffff 10 overflow\n\
             4000 0 empty\n",
        );
        assert_eq!(map.len(), 2);
        assert_eq!(map.rejected_lines, 4);
        assert_eq!(
            map.lookup(0x100f).unwrap().name,
            "LazyCompile:*fib /app/x.js:3"
        );
        assert!(map.lookup(0x1010).is_none());
        assert_eq!(map.lookup(0x2000).unwrap().name, "py::handler:/app/x.py");
        assert!(map.lookup(0xfff).is_none());
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let map = PerfMap::parse("1000 10 old\n1000 10 new\n");
        assert_eq!(map.lookup(0x1000).unwrap().name, "new");
    }
}
