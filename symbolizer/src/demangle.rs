//! Demangling of C++ and Rust names, and only those.
//!
//! blazesym's demangler turns plain C names like `a` or `b` into `signed char`
//! or `bool`, so its demangling is off and only names that carry a mangling
//! prefix are demangled here.

/// Demangles Itanium C++ (`_Z`) and Rust (`_R`, legacy `_ZN...E`) names;
/// returns every other name unchanged.
pub fn demangle(name: &str) -> String {
    if let Some(rust) = demangle_rust(name) {
        return rust;
    }
    if name.starts_with("_Z") {
        if let Ok(symbol) = cpp_demangle::Symbol::new(name) {
            if let Ok(text) = symbol.demangle(&cpp_demangle::DemangleOptions::default()) {
                return text;
            }
        }
    }
    name.to_owned()
}

fn demangle_rust(name: &str) -> Option<String> {
    if !(name.starts_with("_R") || name.starts_with("_ZN")) {
        return None;
    }
    let demangled = rustc_demangle::try_demangle(name).ok()?;
    // A legacy Rust name ends in a `17h<hash>E` segment; C++ names that also
    // start with `_ZN` are left to the C++ demangler.
    if name.starts_with("_ZN") && !name.contains("17h") {
        return None;
    }
    // `{:#}` drops the trailing hash.
    Some(format!("{demangled:#}"))
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn plain_c_names_are_left_alone() {
        for name in ["a", "b", "main", "spin", "c", "h", "v"] {
            assert_eq!(demangle(name), name);
        }
    }

    #[test]
    fn cpp_names_are_demangled() {
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(demangle("_Z4spini"), "spin(int)");
    }

    #[test]
    fn rust_names_are_demangled_without_hash() {
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
    }

    #[test]
    fn broken_manglings_come_back_unchanged() {
        assert_eq!(demangle("_Z"), "_Z");
        assert_eq!(demangle("_ZN3foo"), "_ZN3foo");
    }
}
