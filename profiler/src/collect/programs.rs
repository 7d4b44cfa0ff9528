//! Looking up typed programs in a loaded BPF object.

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
