//! Row space: which ranges of the fixed-size BPF `unwind_rows` array are in
//! use. A table needs one contiguous range (the BPF side binary-searches it).
//! First fit over a sorted free list, merged on release: the total stays
//! bounded by the array, whatever processes come and go.

/// A range of rows `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRange {
    pub start: u32,
    pub len: u32,
}

#[derive(Debug)]
pub struct RowSpace {
    capacity: u32,
    /// Free ranges, sorted by start, never adjacent (merged).
    free: Vec<RowRange>,
}

impl RowSpace {
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            free: vec![RowRange {
                start: 0,
                len: capacity,
            }],
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Rows not allocated.
    pub fn free_rows(&self) -> u64 {
        self.free.iter().map(|r| u64::from(r.len)).sum()
    }

    /// The first free range of `len` rows, or None (full or too fragmented).
    pub fn allocate(&mut self, len: u32) -> Option<RowRange> {
        if len == 0 {
            return None;
        }
        let index = self.free.iter().position(|r| r.len >= len)?;
        let range = &mut self.free[index];
        let allocated = RowRange {
            start: range.start,
            len,
        };
        range.start += len;
        range.len -= len;
        if range.len == 0 {
            self.free.remove(index);
        }
        Some(allocated)
    }

    /// Gives a range back. Ranges must come from [`RowSpace::allocate`] and
    /// be released once.
    pub fn release(&mut self, range: RowRange) {
        let index = self.free.partition_point(|r| r.start < range.start);
        debug_assert!(
            index == 0 || self.free[index - 1].start + self.free[index - 1].len <= range.start,
            "double release"
        );
        self.free.insert(index, range);
        // Merge with the next, then with the previous.
        if index + 1 < self.free.len() {
            let next = self.free[index + 1];
            if self.free[index].start + self.free[index].len == next.start {
                self.free[index].len += next.len;
                self.free.remove(index + 1);
            }
        }
        if index > 0 {
            let current = self.free[index];
            let previous = &mut self.free[index - 1];
            if previous.start + previous.len == current.start {
                previous.len += current.len;
                self.free.remove(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_first_fit_and_merges_on_release() {
        let mut space = RowSpace::new(100);
        let a = space.allocate(30).unwrap();
        let b = space.allocate(30).unwrap();
        let c = space.allocate(30).unwrap();
        assert_eq!((a.start, b.start, c.start), (0, 30, 60));
        assert!(space.allocate(11).is_none(), "only 10 left");
        space.release(b);
        assert_eq!(
            space.allocate(20).unwrap().start,
            30,
            "first fit reuses the hole"
        );
        space.release(a);
        space.release(c);
        // Free: [0,30) [50,100) -> 80 rows, 50 contiguous.
        assert_eq!(space.free_rows(), 80);
        assert!(space.allocate(51).is_none());
        assert_eq!(space.allocate(50).unwrap().start, 50);
    }

    #[test]
    fn everything_released_is_one_range_again() {
        let mut space = RowSpace::new(64);
        let ranges: Vec<_> = (0..8).map(|_| space.allocate(8).unwrap()).collect();
        assert!(space.allocate(1).is_none());
        for r in ranges
            .iter()
            .rev()
            .step_by(2)
            .chain(ranges.iter().step_by(2))
        {
            space.release(*r);
        }
        assert_eq!(space.allocate(64).unwrap(), RowRange { start: 0, len: 64 });
        assert!(space.allocate(0).is_none());
    }
}
