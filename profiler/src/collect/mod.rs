//! Collect stage: loads the BPF sampler, attaches it to every CPU and hands
//! decoded samples to the caller.

mod record;
mod sampler;

pub use record::{DecodeError, Sample};
pub use sampler::{
    LoadError, Sampler, SamplerConfig, SamplerStats, SamplerTargets, DRAIN_INTERVAL,
};
