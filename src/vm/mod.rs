//! Running the VM: what the host offers, the QEMU command line, and the
//! QEMU and virtiofsd processes.

pub mod host;
pub mod process;
pub mod qemu;
pub mod qemu_args;
pub mod spec;
pub mod virtiofsd;
