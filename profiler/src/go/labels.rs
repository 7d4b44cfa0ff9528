//! A goroutine's pprof label set, read from the process's memory as
//! untrusted input: at most [`MAX_LABELS`] pairs, strings cut at
//! [`MAX_STRING`] bytes, map buckets and overflow chains bounded.

use std::collections::BTreeMap;
use std::sync::Arc;

use symbolizer::ProcessMemory;

use super::detect::LabelLayout;

/// A label set, sorted by key.
pub type LabelSet = Arc<[(Arc<str>, Arc<str>)]>;

/// Pairs read from one set; `runtime/pprof` users set a handful.
pub const MAX_LABELS: usize = 64;
/// Longest key or value read (bytes).
pub const MAX_STRING: u64 = 256;

/// Buckets of a `map[string]string` read at most (2^4: far more than a
/// label set of [`MAX_LABELS`] needs), and overflow buckets per chain.
const MAX_BUCKET_SHIFT: u8 = 4;
const MAX_OVERFLOW: usize = 8;
/// hmap (Go 1.18-1.23, runtime/map.go): count, flags, B, noverflow,
/// hash0, buckets, oldbuckets.
const HMAP_B: u64 = 9;
const HMAP_BUCKETS: u64 = 16;
const HMAP_OLDBUCKETS: u64 = 24;
/// A bucket of map[string]string: 8 top hashes, 8 keys, 8 values (16-byte
/// strings), the overflow pointer.
const BUCKET_KEYS: u64 = 8;
const BUCKET_VALUES: u64 = 8 + 8 * 16;
const BUCKET_OVERFLOW: u64 = 8 + 16 * 16;
/// Top hashes below this mark empty or evacuated slots.
const MIN_TOP_HASH: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot read the process's memory: {0}")]
    Read(#[from] std::io::Error),
    #[error("a label set of {0} pairs is not one runtime/pprof made")]
    Size(u64),
}

/// The label set at `address` (the value of `g.labels`).
pub fn read_labels(
    memory: &ProcessMemory,
    layout: LabelLayout,
    address: u64,
) -> Result<LabelSet, LabelError> {
    let mut pairs = BTreeMap::new();
    match layout {
        LabelLayout::Slice => {
            let list = memory.u64(address)?;
            let len = memory.u64(address.wrapping_add(8))?;
            if len > MAX_LABELS as u64 {
                return Err(LabelError::Size(len));
            }
            let bytes = memory.bytes(list, (len * 32) as usize)?;
            for pair in bytes.chunks_exact(32) {
                let word = |i: usize| u64::from_le_bytes(pair[i..i + 8].try_into().expect("8"));
                let key = string(memory, word(0), word(8))?;
                let value = string(memory, word(16), word(24))?;
                pairs.insert(key, value);
            }
        }
        LabelLayout::Map => {
            let hmap = memory.u64(address)?;
            if hmap != 0 {
                let count = memory.u64(hmap)?;
                if count > MAX_LABELS as u64 {
                    return Err(LabelError::Size(count));
                }
                let shift = memory.bytes(hmap.wrapping_add(HMAP_B), 1)?[0];
                let buckets = memory.u64(hmap.wrapping_add(HMAP_BUCKETS))?;
                let old = memory.u64(hmap.wrapping_add(HMAP_OLDBUCKETS))?;
                read_buckets(memory, buckets, shift, &mut pairs)?;
                // A map still growing has entries in both arrays; evacuated
                // slots in the old one are marked and skipped.
                if old != 0 {
                    read_buckets(memory, old, shift.saturating_sub(1), &mut pairs)?;
                }
            }
        }
    }
    Ok(pairs
        .into_iter()
        .take(MAX_LABELS)
        .map(|(k, v)| (Arc::from(k), Arc::from(v)))
        .collect())
}

fn read_buckets(
    memory: &ProcessMemory,
    buckets: u64,
    shift: u8,
    pairs: &mut BTreeMap<String, String>,
) -> Result<(), LabelError> {
    if buckets == 0 {
        return Ok(());
    }
    for index in 0..1u64 << shift.min(MAX_BUCKET_SHIFT) {
        let mut bucket = buckets.wrapping_add(index * (BUCKET_OVERFLOW + 8));
        for _ in 0..=MAX_OVERFLOW {
            let tops = memory.bytes(bucket, 8)?;
            for (slot, &top) in tops.iter().enumerate() {
                if top < MIN_TOP_HASH || pairs.len() >= MAX_LABELS {
                    continue;
                }
                let at = |base: u64| bucket.wrapping_add(base + 16 * slot as u64);
                let (key_at, value_at) = (at(BUCKET_KEYS), at(BUCKET_VALUES));
                let key = string(
                    memory,
                    memory.u64(key_at)?,
                    memory.u64(key_at.wrapping_add(8))?,
                )?;
                let value = string(
                    memory,
                    memory.u64(value_at)?,
                    memory.u64(value_at.wrapping_add(8))?,
                )?;
                pairs.insert(key, value);
            }
            bucket = memory.u64(bucket.wrapping_add(BUCKET_OVERFLOW))?;
            if bucket == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// A Go string (data pointer, length), cut at [`MAX_STRING`] bytes.
fn string(memory: &ProcessMemory, data: u64, len: u64) -> Result<String, LabelError> {
    if len == 0 {
        return Ok(String::new());
    }
    let bytes = memory.bytes(data, len.min(MAX_STRING) as usize)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
