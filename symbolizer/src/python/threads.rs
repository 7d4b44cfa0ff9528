//! Python's own thread names (`threading.Thread(name=...)`), read from the
//! process: `sys.modules["threading"]._active` maps each thread's ident to
//! its `Thread`, whose `_name` and `_native_id` (the OS thread id) are
//! instance attributes. py-spy reads the same. (3.14 and later also give
//! the OS thread its name, cut to 15 bytes; this reads it whole.)
//!
//! Nothing here trusts what it reads: every object's type is checked, every
//! count is bounded, and where a structure is found by searching (the
//! interpreter's `sys.modules`, a class's shared attribute keys) the match
//! must hold the key looked for. Instance attributes are stored differently
//! by version: a `__dict__` at the type's `tp_dictoffset` (3.9, 3.10), or
//! values indexed by the class's shared keys (3.11: an array pointed to from
//! before the object; 3.13+: inline after it). 3.12 is not read (no build
//! here to check it on).

use std::collections::HashMap;
use std::io;

use super::code::{read_string, CodeError};
use super::detect::PythonProcess;
use super::layout::OB_TYPE;
use crate::memory::ProcessMemory;

/// Most dict entries looked at in one dict (sys.modules has a few hundred).
const MAX_ENTRIES: u64 = 8192;
/// How far into the interpreter state `sys.modules` is searched for.
const INTERP_SEARCH: u64 = 16384;
/// How far into a class object its shared keys pointer is searched for.
const TYPE_SEARCH: u64 = 2048;
/// `PyTypeObject.tp_basicsize` and `tp_dictoffset` (every 3.x).
const TP_BASICSIZE: u64 = 32;
const TP_DICTOFFSET: u64 = 288;
/// `PyModuleObject.md_dict`.
const MD_DICT: u64 = 16;
/// `PyDictObject.ma_keys` and `ma_values`.
const MA_KEYS: u64 = 32;
const MA_VALUES: u64 = 40;

#[derive(Debug, thiserror::Error)]
pub enum ThreadNamesError {
    #[error("cannot read the process's memory")]
    Read(#[from] io::Error),
    #[error("Python {0}.{1}: thread names are not read for this version")]
    Version(u8, u8),
    #[error("the interpreter exports no PyDict_Type or PyLong_Type")]
    NoTypes,
    #[error("no sys.modules found in the interpreter state")]
    NoModules,
    #[error("0x{0:x} is not a dict")]
    NotDict(u64),
    #[error("unexpected {0} at 0x{1:x}")]
    Layout(&'static str, u64),
}

impl From<CodeError> for ThreadNamesError {
    fn from(e: CodeError) -> Self {
        match e {
            CodeError::Read(e) => Self::Read(e),
            CodeError::NotString(at) => Self::Layout("str", at),
            CodeError::NotCode(at) | CodeError::NotBytes(at) => Self::Layout("object", at),
        }
    }
}

/// Reads thread names of one process; remembers where `sys.modules` and
/// each class's shared keys were found.
pub struct ThreadNameReader {
    modules_offset: Option<u64>,
    /// `threading._active`, once found (the dict lives as long as the
    /// module; checked to still be a dict at each read).
    active: Option<u64>,
    /// Class object -> its shared attribute names, in order.
    shared_keys: HashMap<u64, Vec<String>>,
}

impl Default for ThreadNameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadNameReader {
    pub fn new() -> Self {
        Self {
            modules_offset: None,
            active: None,
            shared_keys: HashMap::new(),
        }
    }

    /// OS thread id -> Python thread name, for every thread `threading`
    /// knows; empty when the process has not imported `threading`.
    pub fn read(
        &mut self,
        process: &PythonProcess,
        memory: &ProcessMemory,
    ) -> Result<HashMap<u32, String>, ThreadNamesError> {
        let version = process.version;
        if version.major != 3 || version.minor < 9 || version.minor == 12 {
            return Err(ThreadNamesError::Version(version.major, version.minor));
        }
        if process.types.dict == 0 || process.types.long == 0 {
            return Err(ThreadNamesError::NoTypes);
        }
        let objects = Objects { process, memory };
        let active = match self.active {
            Some(active) if objects.is_a(active, process.types.dict) => active,
            _ => match self.find_active(&objects)? {
                Some(active) => active,
                None => return Ok(HashMap::new()),
            },
        };
        self.active = Some(active);
        let mut names = HashMap::new();
        for (_, thread) in objects.entries(active)? {
            let attrs = self.attributes(&objects, thread, &["_name", "_native_id"])?;
            let (Some(name), Some(native_id)) = (attrs[0], attrs[1]) else {
                continue;
            };
            let Some(tid) = objects.small_int(native_id)? else {
                continue;
            };
            let name = read_string(memory, &process.layout, &process.types, name)?;
            names.insert(tid, name);
        }
        Ok(names)
    }

    /// `sys.modules["threading"]._active`, or None before `threading` is
    /// imported.
    fn find_active(&mut self, objects: &Objects<'_>) -> Result<Option<u64>, ThreadNamesError> {
        let memory = objects.memory;
        let interp = memory.u64(objects.process.interpreters_head)?;
        let offset = match self.modules_offset {
            Some(offset) => offset,
            None => objects.find_modules(interp)?,
        };
        self.modules_offset = Some(offset);
        let modules = memory.u64(interp.wrapping_add(offset))?;
        let Some(threading) = objects.lookup(modules, "threading")? else {
            return Ok(None);
        };
        objects.lookup(memory.u64(threading.wrapping_add(MD_DICT))?, "_active")
    }

    /// The values of instance attributes `wanted` of `object` (None where
    /// it has no such attribute).
    fn attributes(
        &mut self,
        objects: &Objects<'_>,
        object: u64,
        wanted: &[&str],
    ) -> Result<Vec<Option<u64>>, ThreadNamesError> {
        let memory = objects.memory;
        let minor = objects.process.version.minor;
        let class = memory.u64(object.wrapping_add(OB_TYPE))?;
        let from_dict = |dict: u64| -> Result<Vec<Option<u64>>, ThreadNamesError> {
            let entries = objects.entries(dict)?;
            wanted
                .iter()
                .map(|name| objects.find(&entries, name))
                .collect()
        };
        if minor < 11 {
            let offset = memory.u64(class.wrapping_add(TP_DICTOFFSET))? as i64;
            if offset <= 0 || offset > 4096 {
                return Err(ThreadNamesError::Layout("tp_dictoffset", class));
            }
            return from_dict(memory.u64(object.wrapping_add(offset as u64))?);
        }
        // A dict made for the object (by `__dict__` or many attributes)
        // sits just before it, after the GC header.
        let dict = memory.u64(object.wrapping_sub(24))?;
        if dict != 0 {
            return from_dict(dict);
        }
        let values = if minor == 11 {
            memory.u64(object.wrapping_sub(32))?
        } else {
            let size = memory.u64(class.wrapping_add(TP_BASICSIZE))?;
            let start = object.wrapping_add(size.min(4096));
            // capacity, size, embedded, valid, then the values.
            if memory.bytes(start, 4)?[3] == 0 {
                return Err(ThreadNamesError::Layout("inline values", start));
            }
            start.wrapping_add(8)
        };
        if values == 0 {
            return Ok(vec![None; wanted.len()]);
        }
        let keys = match self.shared_keys.entry(class) {
            std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(objects.find_shared_keys(class, wanted[0])?)
            }
        };
        wanted
            .iter()
            .map(|name| match keys.iter().position(|k| k == name) {
                Some(i) => {
                    let value = memory.u64(values.wrapping_add(8 * i as u64))?;
                    Ok((value != 0).then_some(value))
                }
                None => Ok(None),
            })
            .collect()
    }
}

/// Objects of one process.
struct Objects<'a> {
    process: &'a PythonProcess,
    memory: &'a ProcessMemory,
}

impl Objects<'_> {
    fn minor(&self) -> u8 {
        self.process.version.minor
    }

    fn is_a(&self, object: u64, class: u64) -> bool {
        object != 0
            && object.is_multiple_of(8)
            && self.memory.u64(object.wrapping_add(OB_TYPE)).ok() == Some(class)
    }

    fn string(&self, object: u64) -> Option<String> {
        if !self.is_a(object, self.process.types.unicode) {
            return None;
        }
        read_string(
            self.memory,
            &self.process.layout,
            &self.process.types,
            object,
        )
        .ok()
    }

    /// The (key, value) pairs of a dict, in insertion order.
    fn entries(&self, dict: u64) -> Result<Vec<(u64, u64)>, ThreadNamesError> {
        if !self.is_a(dict, self.process.types.dict) {
            return Err(ThreadNamesError::NotDict(dict));
        }
        let memory = self.memory;
        let keys = memory.u64(dict.wrapping_add(MA_KEYS))?;
        let values = memory.u64(dict.wrapping_add(MA_VALUES))?;
        let (start, count, width, key_at, values_at) = if self.minor() < 11 {
            // dk_refcnt, dk_size, dk_lookup, dk_usable, dk_nentries, then
            // dk_size indices of 1 to 8 bytes and (hash, key, value) entries.
            let size = memory.u64(keys.wrapping_add(8))?;
            let count = memory.u64(keys.wrapping_add(32))?;
            if !size.is_power_of_two() || size > 1 << 24 || count > size {
                return Err(ThreadNamesError::Layout("dict keys", keys));
            }
            let index = match size {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                _ => 4,
            };
            (keys.wrapping_add(40 + size * index), count, 24, 8, values)
        } else {
            // dk_refcnt, dk_log2_size, dk_log2_index_bytes, dk_kind,
            // dk_version, dk_usable, dk_nentries, then the indices and
            // (hash, key, value) or, for str keys, (key, value) entries.
            let head = memory.bytes(keys.wrapping_add(8), 3)?;
            let (log2_size, log2_index, kind) = (head[0], head[1], head[2]);
            let count = memory.u64(keys.wrapping_add(24))?;
            if log2_size > 24 || log2_index > 27 || kind > 2 || count > 1 << log2_size {
                return Err(ThreadNamesError::Layout("dict keys", keys));
            }
            let (width, key_at) = if kind == 0 { (24, 8) } else { (16, 0) };
            // 3.13's values start with capacity, size, embedded and valid.
            let values = if values != 0 && self.minor() >= 13 {
                values.wrapping_add(8)
            } else {
                values
            };
            (
                keys.wrapping_add(32 + (1u64 << log2_index)),
                count,
                width,
                key_at,
                values,
            )
        };
        let count = count.min(MAX_ENTRIES);
        let table = memory.bytes(start, (count * width) as usize)?;
        let word = |at: usize| u64::from_le_bytes(table[at..at + 8].try_into().expect("8 bytes"));
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let key = word(i * width as usize + key_at as usize);
            let value = if values_at != 0 {
                memory.u64(values_at.wrapping_add(8 * i as u64))?
            } else {
                word(i * width as usize + key_at as usize + 8)
            };
            if key != 0 && value != 0 {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// The value of the str key `name` among `entries`.
    fn find(&self, entries: &[(u64, u64)], name: &str) -> Result<Option<u64>, ThreadNamesError> {
        Ok(entries
            .iter()
            .find(|(key, _)| self.string(*key).as_deref() == Some(name))
            .map(|&(_, value)| value))
    }

    fn lookup(&self, dict: u64, name: &str) -> Result<Option<u64>, ThreadNamesError> {
        self.find(&self.entries(dict)?, name)
    }

    /// Where `sys.modules` is in the interpreter state: the dict that maps
    /// "sys" to a module.
    fn find_modules(&self, interp: u64) -> Result<u64, ThreadNamesError> {
        // Page by page: the state may end near the end of its mapping.
        for page in (0..INTERP_SEARCH).step_by(4096) {
            let Ok(words) = self.memory.bytes(interp.wrapping_add(page), 4096) else {
                break;
            };
            for (i, chunk) in words.chunks_exact(8).enumerate() {
                let candidate = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                if !self.is_a(candidate, self.process.types.dict) {
                    continue;
                }
                if matches!(self.lookup(candidate, "sys"), Ok(Some(_))) {
                    return Ok(page + i as u64 * 8);
                }
            }
        }
        Err(ThreadNamesError::NoModules)
    }

    /// The attribute names of a class's shared keys (3.11+): the keys table
    /// the class points to that holds `must_hold`.
    fn find_shared_keys(
        &self,
        class: u64,
        must_hold: &str,
    ) -> Result<Vec<String>, ThreadNamesError> {
        // In pieces: the object may end near the end of its mapping.
        let mut words = Vec::new();
        for piece in (0..TYPE_SEARCH).step_by(512) {
            match self.memory.bytes(class.wrapping_add(piece), 512) {
                Ok(bytes) => words.extend(bytes),
                Err(_) => break,
            }
        }
        for chunk in words.chunks_exact(8) {
            let keys = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            if keys == 0 || !keys.is_multiple_of(8) {
                continue;
            }
            let Ok(head) = self.memory.bytes(keys.wrapping_add(8), 3) else {
                continue;
            };
            let (log2_size, log2_index, kind) = (head[0], head[1], head[2]);
            // Shared keys are str-only (kind 1 or 2), small.
            if !(1..=16).contains(&log2_size) || log2_index > 19 || !(1..=2).contains(&kind) {
                continue;
            }
            let Ok(count) = self.memory.u64(keys.wrapping_add(24)) else {
                continue;
            };
            if count == 0 || count > 1 << log2_size {
                continue;
            }
            let start = keys.wrapping_add(32 + (1u64 << log2_index));
            let Ok(table) = self.memory.bytes(start, (count * 16) as usize) else {
                continue;
            };
            let names: Vec<String> = table
                .chunks_exact(16)
                .map(|e| {
                    let key = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
                    self.string(key).unwrap_or_default()
                })
                .collect();
            if names.iter().any(|n| n == must_hold) {
                return Ok(names);
            }
        }
        Err(ThreadNamesError::Layout("shared keys", class))
    }

    /// A non-negative int below 2^30 (one digit), or None.
    fn small_int(&self, object: u64) -> Result<Option<u32>, ThreadNamesError> {
        if !self.is_a(object, self.process.types.long) {
            return Ok(None);
        }
        let size = self.memory.u64(object.wrapping_add(16))?;
        // 3.12+ keep the digit count in lv_tag's upper bits, the sign below.
        let digits = if self.minor() >= 12 { size >> 3 } else { size };
        let negative = if self.minor() >= 12 {
            size & 3 == 2
        } else {
            (size as i64) < 0
        };
        if negative || digits > 1 {
            return Ok(None);
        }
        if digits == 0 {
            return Ok(Some(0));
        }
        Ok(Some(
            self.memory.u32(object.wrapping_add(24))? & 0x3fff_ffff,
        ))
    }
}
