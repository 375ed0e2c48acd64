//! rum: cloud-image VMs on QEMU, driven directly, with a fast provisioning
//! retry loop. The binary is a thin layer over this library.

// System calls go through `nix`; this crate needs no `unsafe` of its own.
#![forbid(unsafe_code)]

pub mod agent_binary;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod disk;
pub mod drift;
pub mod error;
pub mod exit;
pub mod fsutil;
pub mod guard;
pub mod identity;
pub mod image;
pub mod instance;
pub mod lifecycle;
pub mod lock;
pub mod output;
pub mod provision;
pub mod ram;
pub mod record;
pub mod seed;
pub mod state;
pub mod terminal;
pub mod testhook;
pub mod vm;

pub use error::Error;
pub use exit::Exit;
