//! Disk images rum creates natively (no `qemu-img` at run time): qcow2
//! overlays on a base image, empty qcow2 drives, and what a base image is.

mod boot;
mod error;
mod image;
mod qcow2;

pub use boot::{BootNeeds, boot_needs};
pub use error::DiskError;
pub use image::{ImageFormat, ImageInfo, SnapshotInfo, backing_file, inspect, snapshots};
pub use qcow2::{create_drive, create_overlay};
