//! `rum up`.

use crate::lifecycle::Instance;
use crate::lifecycle::up::{UpOptions, up};
use crate::output::Reporter;
use crate::{Error, ExitStatus};
use std::path::Path;

pub fn run(file: &Path, reporter: &Reporter) -> Result<ExitStatus, Error> {
    let instance = Instance::open(file)?;
    for warning in &instance.warnings {
        reporter.warn(&format!("`{}` {}", warning.path, warning.message));
    }
    up(&instance, &UpOptions::from_env(), reporter)
}
