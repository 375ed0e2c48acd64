//! `rum retry`.

use crate::lifecycle::Instance;
use crate::lifecycle::retry::{RetryOptions, retry};
use crate::output::Reporter;
use crate::{Error, ExitStatus};
use std::path::Path;

pub fn run(file: &Path, options: &RetryOptions, reporter: &Reporter) -> Result<ExitStatus, Error> {
    let instance = Instance::open(file)?;
    retry(&instance, options, reporter)
}
