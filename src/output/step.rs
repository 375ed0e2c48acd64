//! One step of a command's progress: running, then ✓ done, ✗ failed or — skipped.

use super::{Mode, Reporter};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::time::{Duration, Instant};

pub struct Step<'r> {
    reporter: &'r Reporter,
    title: String,
    started: Instant,
    spinner: Option<ProgressBar>,
    finished: bool,
}

#[derive(Clone, Copy)]
enum Outcome {
    Done,
    Failed,
    Skipped,
}

impl<'r> Step<'r> {
    pub(super) fn start(reporter: &'r Reporter, title: String) -> Self {
        let spinner = match reporter.mode {
            Mode::Human => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} {elapsed:.dim}")
                        .expect("static template")
                        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
                );
                bar.set_message(title.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
            Mode::Plain => {
                eprintln!("  … {title}");
                None
            }
            Mode::Json => {
                reporter.json(json!({"event": "step", "title": title, "status": "started"}));
                None
            }
        };
        Self {
            reporter,
            title,
            started: Instant::now(),
            spinner,
            finished: false,
        }
    }

    /// Shows progress text next to the running step (human mode only).
    pub fn progress(&self, text: &str) {
        if let Some(bar) = &self.spinner {
            bar.set_message(format!("{} ({text})", self.title));
        }
    }

    pub fn done(self) {
        self.finish(Outcome::Done, None);
    }

    pub fn fail(self, detail: &str) {
        self.finish(Outcome::Failed, Some(detail));
    }

    pub fn skip(self, reason: &str) {
        self.finish(Outcome::Skipped, Some(reason));
    }

    fn finish(mut self, outcome: Outcome, detail: Option<&str>) {
        self.finished = true;
        self.render(outcome, detail);
    }

    fn render(&mut self, outcome: Outcome, detail: Option<&str>) {
        let elapsed = self.started.elapsed();
        if let Some(bar) = self.spinner.take() {
            bar.finish_and_clear();
        }
        let (mark, color, status) = match outcome {
            Outcome::Done => ("✓", "32", "done"),
            Outcome::Failed => ("✗", "31", "failed"),
            Outcome::Skipped => ("—", "2", "skipped"),
        };
        match self.reporter.mode {
            Mode::Json => self.reporter.json(json!({
                "event": "step",
                "title": self.title,
                "status": status,
                "detail": detail,
                "elapsed_ms": elapsed.as_millis() as u64,
            })),
            _ => {
                let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
                eprintln!(
                    "  {} {}{detail}",
                    self.reporter.paint(color, mark),
                    self.title
                );
            }
        }
    }
}

impl Drop for Step<'_> {
    /// A step abandoned by an early return shows as failed rather than vanishing.
    fn drop(&mut self) {
        if !self.finished {
            self.render(Outcome::Failed, Some("interrupted"));
        }
    }
}
