//! `[resources]`: CPUs, memory and the root disk.

use super::{Checker, size};
use crate::config::model::Resources;
use crate::config::raw::RawResources;
use crate::config::size::GIB;
use crate::config::span::KeyPath;

pub const DEFAULT_CPUS: u32 = 2;
pub const DEFAULT_MEMORY_MB: u64 = 2048;
pub const DEFAULT_DISK: &str = "20G";
const MIN_MEMORY_MB: u64 = 128;
const MAX_CPUS: u32 = 255;

pub(super) fn resources(c: &mut Checker, raw: RawResources) -> Resources {
    let path = KeyPath::root().key("resources");
    let cpus = raw.cpus.unwrap_or(DEFAULT_CPUS);
    if cpus == 0 || cpus > MAX_CPUS {
        c.problem(path.key("cpus"), format!("is {cpus}; give 1 to {MAX_CPUS}"));
    }
    let memory_mb = raw.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if memory_mb < MIN_MEMORY_MB {
        c.problem(
            path.key("memory_mb"),
            format!("is {memory_mb}; a guest needs at least {MIN_MEMORY_MB} (MiB)"),
        );
    }
    let disk_text = raw.disk.unwrap_or_else(|| DEFAULT_DISK.into());
    let disk = size(c, path.key("disk"), &disk_text, GIB, "1G");
    Resources {
        cpus,
        memory_mb,
        disk,
    }
}
