//! The guest agent this `rum` carries: a static x86_64 Linux binary built
//! from `agent/` by `build.rs`. rum delivers it to the guest (seed ISO) and
//! compares [`BUILD_ID`] with the build id the agent reports in its
//! handshake to tell whether the guest runs this very agent.

use std::sync::OnceLock;

/// The agent executable.
pub static BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rum-agent"));

/// First 16 hex digits of the SHA-256 of [`BYTES`]: what the agent reports
/// as `build_id` (it hashes its own executable).
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| rum_agent::protocol::build_id_of(BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_a_static_x86_64_elf() {
        assert_eq!(&BYTES[..4], b"\x7fELF");
        assert_eq!(BYTES[4], 2, "64-bit");
        // e_machine = EM_X86_64
        assert_eq!(u16::from_le_bytes([BYTES[18], BYTES[19]]), 62);
        // No PT_INTERP program header: no dynamic loader needed.
        let phoff = u64::from_le_bytes(BYTES[32..40].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes([BYTES[54], BYTES[55]]) as usize;
        let phnum = u16::from_le_bytes([BYTES[56], BYTES[57]]) as usize;
        for i in 0..phnum {
            let p_type = u32::from_le_bytes(
                BYTES[phoff + i * phentsize..phoff + i * phentsize + 4]
                    .try_into()
                    .unwrap(),
            );
            assert_ne!(p_type, 3, "PT_INTERP: the agent is dynamically linked");
        }
        assert_eq!(build_id().len(), 16);
    }
}
