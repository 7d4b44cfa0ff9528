//! CPython versions smolder knows the layouts of.

use std::fmt;

/// A CPython version (`PY_VERSION_HEX` without the release level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PythonVersion {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl PythonVersion {
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// From `Py_Version` / `PY_VERSION_HEX` (0x030B07F0 is 3.11.7 final).
    pub fn from_hex(hex: u64) -> Self {
        Self::new((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8)
    }

    /// From a file name such as `libpython3.11.so.1.0` or `python3.9d`.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let rest = &name[name.find("python")? + "python".len()..];
        let (major, rest) = rest.split_once('.')?;
        let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some(Self::new(major.parse().ok()?, minor.parse().ok()?, 0))
    }

    /// Same major and minor version.
    pub fn is(self, major: u8, minor: u8) -> bool {
        self.major == major && self.minor == minor
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_hex_and_file_names() {
        assert_eq!(
            PythonVersion::from_hex(0x030B07F0),
            PythonVersion::new(3, 11, 7)
        );
        assert_eq!(
            PythonVersion::from_file_name("libpython3.11.so.1.0"),
            Some(PythonVersion::new(3, 11, 0))
        );
        assert_eq!(
            PythonVersion::from_file_name("python3.9d"),
            Some(PythonVersion::new(3, 9, 0))
        );
        assert_eq!(PythonVersion::from_file_name("python3"), None);
        assert_eq!(PythonVersion::from_file_name("bash"), None);
    }
}
