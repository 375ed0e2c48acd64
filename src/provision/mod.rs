//! Provisioning: the ordered script list built from rum.toml and run by the
//! guest agent.

pub mod fs_script;
pub mod run;
pub mod scripts;
