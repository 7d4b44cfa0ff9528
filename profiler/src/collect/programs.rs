//! Looking up typed programs in a loaded BPF object, and reading map errors.

use aya::maps::MapError;
use aya::programs::ProgramError;
use aya::Ebpf;

use super::LoadError;

/// The program `name` of `ebpf`, as its concrete type (`PerfEvent`, ...).
pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(LoadError::Missing(name))?;
    program.try_into().map_err(|source| LoadError::Program {
        name,
        action: "lookup",
        source,
    })
}

/// Whether a map update or delete failed only because the key was not there
/// (aya reports a delete of a missing key as the syscall's ENOENT).
pub fn key_was_missing(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
