//! Running the VM: what the host offers, the QEMU command line, and the
//! QEMU and virtiofsd processes.

pub mod host;
pub mod qemu_args;
