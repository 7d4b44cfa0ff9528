//! Where a process publishes the trace context of its threads: the
//! OpenTelemetry thread context (OTEP 4947), a thread-local pointer named
//! `otel_thread_ctx_v1` to a record holding the trace and span id the
//! thread serves.
//!
//! A reader outside the process needs, per process, how to get from a
//! thread's thread pointer (fs base on x86-64) to that variable. The module
//! that defines it says how its code reaches it (the relocation against the
//! symbol, or none in the executable); the dynamic loader's answer is read
//! from the live process:
//!
//! | access | where the answer is | slot |
//! |---|---|---|
//! | TLS descriptor (`-mtls-dialect=gnu2`) | GOT pair: resolver, argument | static offset, or (module, offset) |
//! | initial-exec (`R_X86_64_TPOFF64`) | GOT word | static offset |
//! | general-dynamic (`R_X86_64_DTPMOD64`) | GOT pair: module, offset | (module, offset) |
//! | local-exec (in the executable) | the executable's `PT_TLS` | static offset |
//!
//! Files and memory are untrusted: every read is bounded and checked, and a
//! value that does not look like what the loader writes is an error, not a
//! guess.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use object::elf;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol, RelocationFlags, RelocationTarget, SymbolKind};

use crate::memory::ProcessMemory;
use crate::{FileId, Module, ProcessMaps, RegionKind};

/// The thread-local variable OTEP 4947 names.
pub const SYMBOL: &str = "otel_thread_ctx_v1";

/// How each thread's `otel_thread_ctx_v1` is found from its thread pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSlot {
    /// In static TLS: at `fs_base + tp_offset`.
    Static { tp_offset: i64 },
    /// In a dynamically allocated TLS block: the thread's DTV entry
    /// `module_id` points at the block, the variable is `block_offset` in.
    Dynamic { module_id: u64, block_offset: u64 },
}

/// How the defining module's code reaches the variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAccess {
    Descriptor,
    InitialExec,
    GeneralDynamic,
    LocalExec,
}

impl std::fmt::Display for TlsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Descriptor => "TLS descriptor",
            Self::InitialExec => "initial-exec",
            Self::GeneralDynamic => "general-dynamic",
            Self::LocalExec => "local-exec",
        })
    }
}

/// A process that publishes thread context, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextLocation {
    /// The module defining `otel_thread_ctx_v1`.
    pub module: PathBuf,
    pub access: TlsAccess,
    pub slot: ContextSlot,
}

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("cannot read {path}: {source}")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("pid {pid}: {source}")]
    Proc {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} defines {SYMBOL} but no relocation or TLS segment says where it is")]
    NoAccess { path: PathBuf },
    /// The loader has not filled in the GOT yet (a lazily bound descriptor,
    /// a library being loaded): look again later.
    #[error("{path}: the loader has not resolved {SYMBOL} ({access}) yet")]
    Unresolved { path: PathBuf, access: TlsAccess },
}

impl LocateError {
    /// Worth another look later (the process may still be loading).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unresolved { .. } | Self::Proc { .. })
    }
}

/// What one file says about the variable, whatever process maps it.
#[derive(Debug, Clone)]
enum Definition {
    Absent,
    Present(Defined),
}

#[derive(Debug, Clone)]
struct Defined {
    access: Access,
    /// PT_LOAD segments: (file offset, file size, link-time address).
    segments: Vec<(u64, u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Access {
    /// GOT pair at this link-time address; `adjust` is added to the
    /// offset the loader resolved (the symbol's value for a descriptor of
    /// the module's block rather than of the symbol).
    Descriptor {
        got: u64,
        adjust: i64,
    },
    InitialExec {
        got: u64,
    },
    GeneralDynamic {
        got: u64,
        adjust: i64,
    },
    /// Only valid in the executable (TLS module 1).
    LocalExec {
        tp_offset: i64,
    },
}

/// Files examined are remembered by identity, so that a library shared by
/// many processes is read once. Bounded: cleared when it grows past this.
const MAX_REMEMBERED_FILES: usize = 8192;

/// Finds thread-context publishers among processes, remembering which files
/// define the variable.
#[derive(Debug, Default)]
pub struct ContextFinder {
    files: HashMap<FileId, Definition>,
}

impl ContextFinder {
    /// Where `maps.pid` publishes its threads' context, if it does: the
    /// first module that defines `otel_thread_ctx_v1`.
    pub fn locate(&mut self, maps: &ProcessMaps) -> Result<Option<ContextLocation>, LocateError> {
        let mut checked: Vec<FileId> = Vec::new();
        for region in &maps.regions {
            let RegionKind::Module(module) = &region.kind else {
                continue;
            };
            if checked.contains(&module.id) {
                continue;
            }
            checked.push(module.id);
            if self.files.len() >= MAX_REMEMBERED_FILES {
                self.files.clear();
            }
            let definition = match self.files.get(&module.id) {
                Some(d) => d.clone(),
                None => {
                    let d = match examine(module, maps.pid) {
                        // A file that does not parse cannot be the writer:
                        // it must not hide one later in the list.
                        Err(LocateError::Elf { path, source }) => {
                            log::debug!("{}: not examined for {SYMBOL}: {source}", path.display());
                            Definition::Absent
                        }
                        other => other?,
                    };
                    self.files.insert(module.id, d.clone());
                    d
                }
            };
            let Definition::Present(defined) = definition else {
                continue;
            };
            let Some(bias) = load_bias(&defined.segments, region.start, region.offset) else {
                continue;
            };
            return resolve(maps.pid, module, &defined.access, bias).map(Some);
        }
        Ok(None)
    }
}

/// Reads a module: does it define the variable, and how is it reached?
fn examine(module: &Module, pid: u32) -> Result<Definition, LocateError> {
    let Some(file) = module.file.as_ref() else {
        return Ok(Definition::Absent);
    };
    // SAFETY: read-only mapping; a file truncated under us can fault the
    // read, as with every mmap reader (blazesym does the same).
    let data =
        unsafe { memmap2::Mmap::map(file) }.map_err(|source| LocateError::Proc { pid, source })?;
    definition(&data, &module.path, || is_executable(module, pid))
}

/// Whether the ELF file `data` (at `path`) defines the variable, and how
/// its code reaches it; `is_executable` says whether it is the process's
/// executable (asked only when no relocation answers).
fn definition(
    data: &[u8],
    path: &std::path::Path,
    is_executable: impl FnOnce() -> bool,
) -> Result<Definition, LocateError> {
    let elf_err = |source| LocateError::Elf {
        path: path.to_owned(),
        source,
    };
    let file = ElfFile64::<Endianness>::parse(data).map_err(elf_err)?;
    let endian = file.endian();
    let headers = file.elf_program_headers();
    let tls = headers.iter().find(|p| p.p_type(endian) == elf::PT_TLS);
    // Only a module with a TLS segment can define a TLS variable.
    let Some(tls) = tls else {
        return Ok(Definition::Absent);
    };
    let symbol = file
        .dynamic_symbols()
        .chain(file.symbols())
        .find(|s| s.kind() == SymbolKind::Tls && !s.is_undefined() && s.name() == Ok(SYMBOL));
    let Some(symbol) = symbol else {
        return Ok(Definition::Absent);
    };
    let value = symbol.address();
    let index = symbol.index();
    let segments = headers
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD)
        .map(|p| (p.p_offset(endian), p.p_filesz(endian), p.p_vaddr(endian)))
        .collect();
    let mut by_symbol: Option<Access> = None;
    let mut by_module: Option<Access> = None;
    for (got, relocation) in file.dynamic_relocations().into_iter().flatten() {
        let RelocationFlags::Elf { r_type } = relocation.flags() else {
            continue;
        };
        let ours = relocation.target() == RelocationTarget::Symbol(index);
        let module_wide = relocation.target() == RelocationTarget::Absolute;
        // Descriptors and module ids of the module's own block (local
        // dynamic) resolve to the block's start plus the addend.
        let adjust = (value as i64).wrapping_sub(relocation.addend());
        let access = match r_type {
            elf::R_X86_64_TLSDESC if ours => Access::Descriptor { got, adjust: 0 },
            elf::R_X86_64_TLSDESC if module_wide => Access::Descriptor { got, adjust },
            elf::R_X86_64_DTPMOD64 if ours => Access::GeneralDynamic { got, adjust: 0 },
            elf::R_X86_64_DTPMOD64 if module_wide => Access::GeneralDynamic {
                got,
                adjust: value as i64,
            },
            elf::R_X86_64_TPOFF64 if ours => Access::InitialExec { got },
            _ => continue,
        };
        if ours && by_symbol.is_none() {
            by_symbol = Some(access);
        } else if module_wide && by_module.is_none() {
            by_module = Some(access);
        }
    }
    let access = match by_symbol.or(by_module) {
        Some(access) => access,
        None if is_executable() => Access::LocalExec {
            tp_offset: local_exec_offset(
                value,
                tls.p_memsz(endian),
                tls.p_align(endian),
                tls.p_vaddr(endian),
            ),
        },
        None => {
            return Err(LocateError::NoAccess {
                path: path.to_owned(),
            })
        }
    };
    Ok(Definition::Present(Defined { access, segments }))
}

/// The fuzz target's entry: `data` examined as a library and as the
/// executable.
#[cfg(any(fuzzing, test))]
pub(crate) fn examine_bytes(data: &[u8]) {
    for executable in [false, true] {
        let _ = definition(data, std::path::Path::new("fuzz-input"), || executable);
    }
}

/// Whether `module` is the process's executable (TLS module 1, whose block
/// sits right below the thread pointer).
fn is_executable(module: &Module, pid: u32) -> bool {
    std::fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|m| {
        let dev = m.dev();
        FileId {
            dev_major: libc_major(dev),
            dev_minor: libc_minor(dev),
            inode: m.ino(),
        } == module.id
    })
}

/// glibc's encoding of a device number (`major()` / `minor()`).
fn libc_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

fn libc_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

/// x86-64 (TLS variant II): the executable's block ends at the thread
/// pointer, its size rounded so that the block's first byte keeps the
/// alignment its link-time address had (glibc `_dl_determine_tlsoffset`).
fn local_exec_offset(value: u64, memsz: u64, align: u64, vaddr: u64) -> i64 {
    let align = align.max(1);
    let firstbyte = vaddr.wrapping_neg() & (align - 1);
    let block = memsz
        .wrapping_sub(firstbyte)
        .div_ceil(align)
        .wrapping_mul(align)
        .wrapping_add(firstbyte);
    (value as i64).wrapping_sub(block as i64)
}

/// Process address minus link-time address, from the mapping at
/// `start` of file offset `offset`.
fn load_bias(segments: &[(u64, u64, u64)], start: u64, offset: u64) -> Option<u64> {
    let &(file_offset, _, vaddr) = segments
        .iter()
        .find(|&&(o, size, _)| o <= offset && offset - o < size)?;
    let link = vaddr.checked_add(offset - file_offset)?;
    Some(start.wrapping_sub(link))
}

/// Most modules a process can have: a larger module id is not the loader's.
const MAX_MODULE_ID: u64 = 1 << 20;

/// Reads what the loader resolved for this process.
fn resolve(
    pid: u32,
    module: &Module,
    access: &Access,
    bias: u64,
) -> Result<ContextLocation, LocateError> {
    let proc_err = |source| LocateError::Proc { pid, source };
    let memory = ProcessMemory::open(pid).map_err(proc_err)?;
    let unresolved = |access| LocateError::Unresolved {
        path: module.path.clone(),
        access,
    };
    let located = |access, slot| ContextLocation {
        module: module.path.clone(),
        access,
        slot,
    };
    let dynamic = |access, module_id: u64, offset: u64, adjust: i64| {
        if module_id == 0 || module_id > MAX_MODULE_ID {
            return Err(unresolved(access));
        }
        Ok(located(
            access,
            ContextSlot::Dynamic {
                module_id,
                block_offset: offset.wrapping_add(adjust as u64),
            },
        ))
    };
    match *access {
        Access::Descriptor { got, adjust } => {
            let argument = memory
                .u64(bias.wrapping_add(got).wrapping_add(8))
                .map_err(proc_err)? as i64;
            if argument < 0 {
                // A static block: the argument is the thread-pointer offset.
                return Ok(located(
                    TlsAccess::Descriptor,
                    ContextSlot::Static {
                        tp_offset: argument.wrapping_add(adjust),
                    },
                ));
            }
            // A dynamic block: the argument points at {module, offset, generation}.
            let module_id = memory.u64(argument as u64).map_err(proc_err)?;
            let offset = memory.u64(argument as u64 + 8).map_err(proc_err)?;
            dynamic(TlsAccess::Descriptor, module_id, offset, adjust)
        }
        Access::GeneralDynamic { got, adjust } => {
            let at = bias.wrapping_add(got);
            let module_id = memory.u64(at).map_err(proc_err)?;
            let offset = memory.u64(at.wrapping_add(8)).map_err(proc_err)?;
            dynamic(TlsAccess::GeneralDynamic, module_id, offset, adjust)
        }
        Access::InitialExec { got } => {
            let tp_offset = memory.u64(bias.wrapping_add(got)).map_err(proc_err)? as i64;
            if tp_offset >= 0 {
                return Err(unresolved(TlsAccess::InitialExec));
            }
            Ok(located(
                TlsAccess::InitialExec,
                ContextSlot::Static { tp_offset },
            ))
        }
        Access::LocalExec { tp_offset } => Ok(located(
            TlsAccess::LocalExec,
            ContextSlot::Static { tp_offset },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_exec_block_ends_at_the_thread_pointer() {
        // 0x24 bytes, 8-aligned: the block is 0x28 bytes below TP.
        assert_eq!(local_exec_offset(0, 0x24, 8, 0x3e10), -0x28);
        assert_eq!(local_exec_offset(0x10, 0x24, 8, 0x3e10), -0x18);
        // A block whose first byte is not aligned keeps its misalignment.
        assert_eq!(local_exec_offset(0, 0x10, 16, 0x3e08), -0x18);
    }

    #[test]
    fn load_bias_from_the_segment_of_the_mapping() {
        let segments = [
            (0, 0x1000, 0),
            (0x1000, 0x2000, 0x1000),
            (0x3e10, 0x200, 0x4e10),
        ];
        assert_eq!(
            load_bias(&segments, 0x7f00_0000_1000, 0x1000),
            Some(0x7f00_0000_0000)
        );
        assert_eq!(load_bias(&segments, 0x7f00_0000_1000, 0x9000), None);
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        // makedev(259, 1) and makedev(0x1234, 0x56789)
        assert_eq!((libc_major(0x10301), libc_minor(0x10301)), (259, 1));
        let dev = (0x1000u64 << 32) | (0x234 << 8) | (0x56700 << 12) | 0x89;
        assert_eq!((libc_major(dev), libc_minor(dev)), (0x1234, 0x56789));
    }
}
