//! Kernel symbols from the kernel itself: `ksym.bpf.o` formats addresses with
//! `bpf_snprintf("%pS")`, run on demand with `BPF_PROG_TEST_RUN`. Looking up
//! the few hundred addresses a profile has costs microseconds; reading
//! `/proc/kallsyms` makes the kernel format every one of its ~100k symbols.

use aya::maps::{Array, MapData};
use aya::programs::{RawTracePoint, RawTracePointRunOptions, TestRun};
use aya::{Ebpf, EbpfLoader};
use symbolizer::{parse_symbol_offset, KernelFunction, KernelSymbolSource};

use super::programs::program;
use super::LoadError;

static KSYM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ksym.bpf.o"));

const BATCH: usize = 64;
const NAME_LEN: usize = 128;
const PROGRAM: &str = "name_kernel_addresses";
const MAP: &str = "ksym_batch";

/// Mirror of `struct smolder_ksym_batch` (profiler-ebpf/include/ksym.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct Batch {
    addresses: [u64; BATCH],
    count: u32,
    pad: u32,
    names: [[u8; NAME_LEN]; BATCH],
}

const _: () = assert!(std::mem::size_of::<Batch>() == 8 * BATCH + 8 + BATCH * NAME_LEN);

// SAFETY: repr(C) plain old data without padding (asserted above); any bit
// pattern is valid.
unsafe impl aya::Pod for Batch {}

pub struct BpfKernelSymbols {
    ebpf: Ebpf,
}

impl BpfKernelSymbols {
    /// Loads the lookup program. It uses no CO-RE, so no kernel BTF is parsed.
    pub fn load() -> Result<Self, LoadError> {
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .load(KSYM_OBJECT)
            .map_err(LoadError::Load)?;
        let prog: &mut RawTracePoint = program(&mut ebpf, PROGRAM)?;
        prog.load().map_err(|source| LoadError::Program {
            name: PROGRAM,
            action: "load",
            source,
        })?;
        Ok(Self { ebpf })
    }

    fn lookup_batch(
        &mut self,
        addresses: &[u64],
    ) -> Result<Vec<Option<KernelFunction>>, LoadError> {
        let mut batch = Batch {
            addresses: [0; BATCH],
            count: addresses.len() as u32,
            pad: 0,
            names: [[0; NAME_LEN]; BATCH],
        };
        batch.addresses[..addresses.len()].copy_from_slice(addresses);
        {
            let mut map = self.batch_map()?;
            map.set(0, batch, 0)
                .map_err(|source| LoadError::Map { name: MAP, source })?;
        }
        let prog: &mut RawTracePoint = program(&mut self.ebpf, PROGRAM)?;
        let result = prog
            .test_run(RawTracePointRunOptions::new())
            .map_err(|source| LoadError::Program {
                name: PROGRAM,
                action: "test run",
                source,
            })?;
        if result.return_value != 0 {
            return Err(LoadError::Missing("ksym_batch value"));
        }
        let out = self
            .batch_map()?
            .get(&0, 0)
            .map_err(|source| LoadError::Map { name: MAP, source })?;
        Ok(out.names[..addresses.len()]
            .iter()
            .map(|name| {
                let end = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
                parse_symbol_offset(&String::from_utf8_lossy(&name[..end]))
            })
            .collect())
    }

    fn batch_map(&mut self) -> Result<Array<&mut MapData, Batch>, LoadError> {
        let map = self.ebpf.map_mut(MAP).ok_or(LoadError::Missing(MAP))?;
        Array::try_from(map).map_err(|source| LoadError::Map { name: MAP, source })
    }
}

impl KernelSymbolSource for BpfKernelSymbols {
    fn lookup(
        &mut self,
        addresses: &[u64],
    ) -> Result<Vec<Option<KernelFunction>>, symbolizer::Error> {
        let mut found = Vec::with_capacity(addresses.len());
        for chunk in addresses.chunks(BATCH) {
            let names = self
                .lookup_batch(chunk)
                .map_err(|e| symbolizer::Error::KernelSource {
                    source_name: "bpf_snprintf(%pS)",
                    source: Box::new(e),
                })?;
            found.extend(names);
        }
        Ok(found)
    }

    fn describe(&self) -> &'static str {
        "bpf_snprintf(%pS)"
    }
}
