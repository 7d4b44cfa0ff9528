//! Names by function extent. A function known only by its symbol (no line
//! table, nothing inlined) names every one of its bytes alike, so one
//! lookup covers all the addresses later sampled in it. Without this, each
//! new leaf address in a hot kernel (MKL's GEMM in libtorch_cpu: a new pc
//! in nearly every sample) went back to the file's symbol table, which kept
//! that table parsed and resident for good.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::frame::Resolution;
use crate::module::FileId;

/// Extents held (bounded: cleared when full, about 150 bytes each).
const MAX_EXTENTS: usize = 16 * 1024;

#[derive(Default)]
pub struct Extents {
    /// (file, first offset) -> (end offset, name).
    by_start: BTreeMap<(FileId, u64), (u64, Resolution)>,
}

impl Extents {
    /// The name of the extent that holds `offset` in `file`, if known.
    pub fn get(&self, file: FileId, offset: u64) -> Option<&Resolution> {
        let (&(found, _), (end, resolution)) =
            self.by_start.range(..=(file, offset)).next_back()?;
        (found == file && offset < *end).then_some(resolution)
    }

    pub fn insert(&mut self, file: FileId, extent: Range<u64>, resolution: Resolution) {
        if extent.is_empty() {
            return;
        }
        if self.by_start.len() >= MAX_EXTENTS {
            self.by_start.clear();
        }
        self.by_start
            .insert((file, extent.start), (extent.end, resolution));
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FunctionFrame, UnknownReason};

    fn file(inode: u64) -> FileId {
        FileId {
            dev_major: 8,
            dev_minor: 1,
            inode,
        }
    }

    #[test]
    fn an_extent_names_its_own_bytes_only() {
        let mut extents = Extents::default();
        let gemm = Resolution::Symbols(vec![FunctionFrame::named("gemm_kernel")]);
        extents.insert(file(1), 0x1000..0x1400, gemm.clone());
        assert_eq!(extents.get(file(1), 0x1000), Some(&gemm));
        assert_eq!(extents.get(file(1), 0x13ff), Some(&gemm));
        assert_eq!(extents.get(file(1), 0x1400), None);
        assert_eq!(extents.get(file(1), 0xfff), None);
        assert_eq!(extents.get(file(2), 0x1000), None);
        extents.insert(
            file(2),
            0x10..0x10,
            Resolution::Unknown(UnknownReason::NoSymbol),
        );
        assert_eq!(extents.len(), 1);
    }
}
