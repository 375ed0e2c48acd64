//! A download's progress shown on a command's step.

use super::Observer;
use crate::output::Step;
use std::time::Duration;

/// Draws on `step`; `record` also keeps each retry (in an instance's history).
pub struct Shown<'s, 'r, F: FnMut(u32, Duration, &str)> {
    pub step: &'s Step<'r>,
    pub record: F,
}

impl<F: FnMut(u32, Duration, &str)> Observer for Shown<'_, '_, F> {
    fn transferred(&mut self, url: &str, done: u64, total: Option<u64>) {
        let file = super::file_name(url);
        self.step
            .transfer(&format!("downloading {file}"), done, total);
    }

    fn retrying(&mut self, attempt: u32, delay: Duration, error: &str) {
        self.step.warn(&format!(
            "download attempt {attempt} failed ({error}); retrying in {:.1} s",
            delay.as_secs_f64()
        ));
        (self.record)(attempt, delay, error);
    }

    fn waiting(&mut self, holder: &str) {
        self.step.note(&format!(
            "waiting for {holder}, which is downloading or using this image"
        ));
    }

    fn verifying(&mut self, done: u64, total: u64) {
        self.step
            .transfer("verifying the checksum", done, Some(total));
    }
}
