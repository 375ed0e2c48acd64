//! One step of a command's progress: running, then ✓ done, ✗ failed or — skipped.

use super::{Mode, Reporter};
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use serde_json::json;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Without a terminal, a transfer prints a line at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub struct Step<'r> {
    reporter: &'r Reporter,
    title: String,
    started: Instant,
    spinner: Option<ProgressBar>,
    finished: bool,
    transfer: RefCell<Option<Transfer>>,
}

/// A byte count under way in a step (a download, a hash).
struct Transfer {
    label: String,
    started: Instant,
    /// Bytes already there when it started (a resumed download).
    from: u64,
    last_line: Option<Instant>,
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
            transfer: RefCell::new(None),
        }
    }

    /// Shows `done` of `total` bytes of `label`: a bar with rate and ETA on a
    /// terminal, a line every few seconds otherwise.
    pub fn transfer(&self, label: &str, done: u64, total: Option<u64>) {
        let mut slot = self.transfer.borrow_mut();
        let fresh = slot.as_ref().is_none_or(|t| t.label != label);
        if fresh {
            *slot = Some(Transfer {
                label: label.to_owned(),
                started: Instant::now(),
                from: done,
                last_line: None,
            });
            if let Some(bar) = &self.spinner {
                // The message last and wide: cut to the terminal's width, never wrapped.
                let template = match total {
                    Some(_) => {
                        "  {spinner} [{bar:20}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {wide_msg}"
                    }
                    None => "  {spinner} {bytes} {binary_bytes_per_sec} {wide_msg}",
                };
                bar.set_length(total.unwrap_or(0));
                bar.set_position(done);
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .expect("static template")
                        .progress_chars("=> ")
                        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
                );
                bar.set_message(format!("{} ({label})", self.title));
                bar.reset_eta();
            }
        }
        let transfer = slot.as_mut().expect("set above");
        if let Some(bar) = &self.spinner {
            bar.set_position(done);
            return;
        }
        let now = Instant::now();
        // A closing line only for a transfer long enough to have shown progress.
        let finished = total == Some(done) && transfer.last_line.is_some();
        let since = transfer.last_line.unwrap_or(transfer.started);
        if !(finished || now.duration_since(since) >= PLAIN_EVERY) {
            return;
        }
        transfer.last_line = Some(now);
        let elapsed = now.duration_since(transfer.started).as_secs_f64();
        let rate = if elapsed > 0.0 {
            (done.saturating_sub(transfer.from)) as f64 / elapsed
        } else {
            0.0
        };
        let eta = match total {
            Some(total) if rate > 0.0 && done < total => Some(Duration::from_secs_f64(
                total.saturating_sub(done) as f64 / rate,
            )),
            _ => None,
        };
        match self.reporter.mode {
            Mode::Json => self.reporter.json(json!({
                "event": "progress",
                "title": self.title,
                "label": label,
                "bytes": done,
                "total": total,
                "bytes_per_sec": rate as u64,
                "eta_s": eta.map(|d| d.as_secs()),
            })),
            _ => {
                let of = match total {
                    Some(total) => format!(
                        " of {} ({}%)",
                        HumanBytes(total),
                        (done * 100).checked_div(total).unwrap_or(100)
                    ),
                    None => String::new(),
                };
                let eta = eta
                    .map(|d| format!(", {} left", HumanDuration(d)))
                    .unwrap_or_default();
                eprintln!(
                    "    {label}: {}{of}, {}/s{eta}",
                    HumanBytes(done),
                    HumanBytes(rate as u64)
                );
            }
        }
    }

    /// Shows progress text next to the running step (human mode only).
    pub fn progress(&self, text: &str) {
        if let Some(bar) = &self.spinner {
            bar.set_message(format!("{} ({text})", self.title));
        }
    }

    /// A warning printed above the running step.
    pub fn warn(&self, message: &str) {
        match &self.spinner {
            Some(bar) => bar.suspend(|| self.reporter.warn(message)),
            None => self.reporter.warn(message),
        }
    }

    /// A note printed above the running step.
    pub fn note(&self, message: &str) {
        match &self.spinner {
            Some(bar) => bar.suspend(|| self.reporter.note(message)),
            None => self.reporter.note(message),
        }
    }

    pub fn done(self) {
        self.finish(Outcome::Done, None);
    }

    pub fn fail(self, detail: &str) {
        self.finish(Outcome::Failed, Some(detail));
    }

    /// Failed with `error`: its first line shows beside the step.
    pub fn fail_with(self, error: &dyn std::fmt::Display) {
        let text = error.to_string();
        self.fail(text.lines().next().unwrap_or_default());
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
