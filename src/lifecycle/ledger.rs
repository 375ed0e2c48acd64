//! Bookkeeping written after the work it records is done: `state.json`
//! during provisioning, a snapshot's record, an attempt's result. On a full
//! disk the data dir's reserve gives such a write its room; should even that
//! fail, the command says so and goes on, as what it did is done, and the
//! next command reconciles the record with what the overlay holds.

use crate::instance::InstancePaths;
use crate::output::Reporter;
use crate::state::State;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a bookkeeping write found its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Room {
    /// The disk had space.
    Free,
    /// Only the data dir's reserve had: it is spent until space is freed.
    Reserve,
}

impl Room {
    /// Tells the user the disk is full, once per command.
    pub fn warn(self, paths: &InstancePaths, reporter: &Reporter) {
        if self == Room::Reserve && !paths.reserve().exists() {
            once(&FULL, reporter, || {
                format!(
                    "The disk holding {} is full: rum used the space it keeps in reserve to write its records. Free space before the next snapshot or step",
                    paths.data.display()
                )
            });
        }
    }
}

// One command runs per process: each of these is said once per command,
// not once for every write of a provisioning run.
static FULL: AtomicBool = AtomicBool::new(false);
static UNRECORDED: AtomicBool = AtomicBool::new(false);

fn once(said: &AtomicBool, reporter: &Reporter, message: impl FnOnce() -> String) {
    if !said.swap(true, Ordering::Relaxed) {
        reporter.warn(&message());
    }
}

/// Runs `write`; when it fails and the reserve is there, gives the reserve
/// back, runs it again, and takes the reserve anew if the disk still has it.
pub fn with_room<E>(paths: &InstancePaths, write: impl Fn() -> Result<(), E>) -> Result<Room, E> {
    match write() {
        Ok(()) => Ok(Room::Free),
        Err(e) => {
            let reserve = paths.reserve();
            if !crate::fsutil::release_reserve(&reserve) {
                return Err(e);
            }
            let again = write();
            crate::fsutil::reserve(&reserve);
            again.map(|()| Room::Reserve)
        }
    }
}

/// Writes `state` for work already done: a write that fails even with the
/// reserve is a warning, never the command's error.
pub fn record(paths: &InstancePaths, state: &State, reporter: &Reporter) {
    let path = paths.state_file();
    match with_room(paths, || state.save(&path)) {
        Ok(room) => room.warn(paths, reporter),
        Err(e) => unrecorded(reporter, &e),
    }
}

/// The warning for a record that could not be written at all.
pub fn unrecorded(reporter: &Reporter, error: &dyn std::fmt::Display) {
    once(&UNRECORDED, reporter, || {
        format!(
            "{error}; what rum did stands, and the next rum command goes by what the VM's disk holds"
        )
    });
}
