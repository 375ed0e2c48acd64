//! `rum retry`.

use crate::lifecycle::Instance;
use crate::lifecycle::retry::{RetryMode, retry};
use crate::output::Reporter;
use crate::{Error, ExitStatus};
use std::path::Path;

pub fn run(file: &Path, mode: RetryMode, reporter: &Reporter) -> Result<ExitStatus, Error> {
    let instance = Instance::open(file)?;
    Ok(retry(&instance, mode, reporter)?)
}
