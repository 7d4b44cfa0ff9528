//! Where registered processes go: the `python_processes` BPF map, or memory
//! for tests.

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};

use super::layout::ProcessEntry;
use crate::collect::key_was_missing;

pub trait PythonStore {
    fn set(&mut self, pid: u32, entry: &ProcessEntry) -> Result<(), MapError>;
    fn remove(&mut self, pid: u32) -> Result<(), MapError>;
}

pub struct BpfPythonStore {
    processes: BpfHashMap<MapData, u32, ProcessEntry>,
}

impl BpfPythonStore {
    pub fn new(map: Map) -> Result<Self, MapError> {
        Ok(Self {
            processes: BpfHashMap::try_from(map)?,
        })
    }
}

impl PythonStore for BpfPythonStore {
    fn set(&mut self, pid: u32, entry: &ProcessEntry) -> Result<(), MapError> {
        self.processes.insert(pid, *entry, 0)
    }

    fn remove(&mut self, pid: u32) -> Result<(), MapError> {
        match self.processes.remove(&pid) {
            Err(e) if key_was_missing(&e) => Ok(()),
            other => other,
        }
    }
}

/// For tests: entries in a plain map.
impl PythonStore for std::collections::HashMap<u32, ProcessEntry> {
    fn set(&mut self, pid: u32, entry: &ProcessEntry) -> Result<(), MapError> {
        self.insert(pid, *entry);
        Ok(())
    }

    fn remove(&mut self, pid: u32) -> Result<(), MapError> {
        std::collections::HashMap::remove(self, &pid);
        Ok(())
    }
}
