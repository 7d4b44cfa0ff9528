//! Code objects and the strings and bytes they point to, read from the
//! sampled process and checked against the types they must have.

use std::io;
use std::sync::Arc;

use super::layout::{Layout, BYTES_DATA, OB_SIZE, OB_TYPE, UNICODE_LENGTH, UNICODE_STATE};
use crate::memory::ProcessMemory;

/// Longest name or file name read (characters); longer ones are cut.
const MAX_STRING: u64 = 4096;
/// Largest line table read.
const MAX_LINE_TABLE: u64 = 1 << 20;

/// What a code object says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInfo {
    /// `co_qualname` (3.11+) or `co_name`.
    pub name: Arc<str>,
    pub file: Arc<str>,
    pub first_line: i32,
    pub line_table: Box<[u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("cannot read the process's memory")]
    Read(#[from] io::Error),
    #[error("0x{0:x} is not a code object")]
    NotCode(u64),
    #[error("0x{0:x} is not a str object")]
    NotString(u64),
    #[error("0x{0:x} is not a bytes object")]
    NotBytes(u64),
}

/// Type objects an object's `ob_type` is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Types {
    pub code: u64,
    pub unicode: u64,
    pub bytes: u64,
    /// `PyDict_Type` and `PyLong_Type` (0 where not found): thread names.
    pub dict: u64,
    pub long: u64,
}

pub fn read_code(
    memory: &ProcessMemory,
    layout: &Layout,
    types: &Types,
    address: u64,
) -> Result<CodeInfo, CodeError> {
    if memory.u64(address.wrapping_add(OB_TYPE))? != types.code {
        return Err(CodeError::NotCode(address));
    }
    let field = |offset: u64| memory.u64(address.wrapping_add(offset));
    let name_at = match layout.code.qualname {
        Some(qualname) => field(qualname)?,
        None => field(layout.code.name)?,
    };
    Ok(CodeInfo {
        name: read_string(memory, layout, types, name_at)?.into(),
        file: read_string(memory, layout, types, field(layout.code.filename)?)?.into(),
        first_line: memory.i32(address.wrapping_add(layout.code.firstlineno))?,
        line_table: read_bytes(memory, types, field(layout.code.linetable)?)?.into(),
    })
}

/// A `str` object. Code objects hold compact strings only (never the legacy
/// kind with a separate buffer).
pub(crate) fn read_string(
    memory: &ProcessMemory,
    layout: &Layout,
    types: &Types,
    address: u64,
) -> Result<String, CodeError> {
    if address == 0 || memory.u64(address.wrapping_add(OB_TYPE))? != types.unicode {
        return Err(CodeError::NotString(address));
    }
    let length = memory
        .u64(address.wrapping_add(UNICODE_LENGTH))?
        .min(MAX_STRING);
    let state = memory.u32(address.wrapping_add(UNICODE_STATE))?;
    // interned:2, kind:3, compact:1, ascii:1
    let kind = (state >> 2) & 0x7;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    if !compact || !matches!(kind, 1 | 2 | 4) {
        return Err(CodeError::NotString(address));
    }
    let data = address.wrapping_add(if ascii {
        layout.ascii_size
    } else {
        layout.compact_size
    });
    let bytes = memory.bytes(data, (length * u64::from(kind)) as usize)?;
    Ok(match kind {
        1 => bytes.iter().map(|&b| char::from(b)).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|c| {
                char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))).unwrap_or('\u{fffd}')
            })
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
            })
            .collect(),
    })
}

fn read_bytes(memory: &ProcessMemory, types: &Types, address: u64) -> Result<Vec<u8>, CodeError> {
    if address == 0 || memory.u64(address.wrapping_add(OB_TYPE))? != types.bytes {
        return Err(CodeError::NotBytes(address));
    }
    let size = memory.u64(address.wrapping_add(OB_SIZE))?;
    if size > MAX_LINE_TABLE {
        return Err(CodeError::NotBytes(address));
    }
    Ok(memory.bytes(address.wrapping_add(BYTES_DATA), size as usize)?)
}
