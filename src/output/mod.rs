//! The one reporting layer every command writes through: steps with
//! ✓ ✗ —, warnings, results and errors, as human, plain or JSON output.
//! Human and plain progress goes to stderr so stdout carries only results;
//! JSON goes to stdout, one object per line.

mod step;

pub use step::Step;

use serde::Serialize;
use serde_json::json;
use std::io::{IsTerminal, Write};

/// The `-o/--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// human on a terminal, plain otherwise
    Auto,
    Human,
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Plain,
    Json,
}

#[derive(Debug, Clone)]
pub struct Reporter {
    mode: Mode,
    color: bool,
}

impl Reporter {
    pub fn new(format: OutputFormat) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let mode = match format {
            OutputFormat::Auto if terminal => Mode::Human,
            OutputFormat::Auto | OutputFormat::Plain => Mode::Plain,
            OutputFormat::Human => Mode::Human,
            OutputFormat::Json => Mode::Json,
        };
        let color = mode == Mode::Human && terminal && std::env::var_os("NO_COLOR").is_none();
        Self { mode, color }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Starts a step; it shows as running until finished through the handle.
    pub fn step(&self, title: impl Into<String>) -> Step<'_> {
        Step::start(self, title.into())
    }

    pub fn warn(&self, message: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "warning", "message": message})),
            _ => eprintln!("{}: {message}", self.paint("33", "warning")),
        }
    }

    /// An informational line for people; JSON readers get it as a note event.
    pub fn note(&self, message: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "note", "message": message})),
            _ => eprintln!("{message}"),
        }
    }

    /// A block of lines for people (on stderr); JSON readers get `data` as
    /// an `event` of its own.
    pub fn block<T: Serialize>(&self, event: &str, human: &str, data: &T) {
        match self.mode {
            Mode::Json => self.json(json!({"event": event, "data": data})),
            _ => eprint!("{human}"),
        }
    }

    /// A step whose own output follows it (provisioning): no spinner, the
    /// start is a line of its own and `phase_finished` gives the outcome.
    pub fn phase_started(&self, title: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "step", "title": title, "status": "started"})),
            _ => eprintln!("  {} {title}", self.paint("36", "▸")),
        }
    }

    /// A step that failed and runs again: `↻ title (detail)`.
    pub fn phase_again(&self, title: &str, detail: &str) {
        match self.mode {
            Mode::Json => self.json(
                json!({"event": "step", "title": title, "status": "retrying", "detail": detail}),
            ),
            _ => eprintln!("  {} {title} ({detail})", self.paint("33", "↻")),
        }
    }

    /// `ok`: `Some(true)` done, `Some(false)` failed, `None` skipped.
    pub fn phase_finished(&self, title: &str, ok: Option<bool>, detail: &str) {
        let (mark, color, status) = match ok {
            Some(true) => ("✓", "32", "done"),
            Some(false) => ("✗", "31", "failed"),
            None => ("—", "2", "skipped"),
        };
        match self.mode {
            Mode::Json => self
                .json(json!({"event": "step", "title": title, "status": status, "detail": detail})),
            _ if detail.is_empty() => eprintln!("  {} {title}", self.paint(color, mark)),
            _ => eprintln!("  {} {title} ({detail})", self.paint(color, mark)),
        }
    }

    /// Output of a guest script, passed through as it comes.
    pub fn script_output(&self, script: &str, stream: &str, data: &[u8]) {
        match self.mode {
            Mode::Json => self.json(json!({
                "event": "output",
                "script": script,
                "stream": stream,
                "data": String::from_utf8_lossy(data),
            })),
            _ if stream == "stderr" => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(data).and_then(|()| err.flush());
            }
            _ => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(data).and_then(|()| out.flush());
            }
        }
    }

    /// A closing line such as "— Ready" (a dash, no ✓).
    pub fn line(&self, text: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "note", "message": text})),
            _ => eprintln!("  {} {text}", self.paint("2", "—")),
        }
    }

    /// The command's result: `human` text on stdout, or `data` as JSON.
    pub fn result<T: Serialize>(&self, human: &str, data: &T) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "result", "data": data})),
            _ => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{human}");
            }
        }
    }

    /// Reports a failed command with its whole cause chain.
    pub fn error(&self, error: &(dyn std::error::Error + 'static), exit_code: i32) {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        match self.mode {
            Mode::Json => self.json(json!({
                "event": "error",
                "message": error.to_string(),
                "causes": causes,
                "exit_code": exit_code,
            })),
            _ => {
                eprintln!("{}: {error}", self.paint("1;31", "error"));
                for cause in causes {
                    eprintln!("  caused by: {cause}");
                }
            }
        }
    }

    fn json(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
    }

    fn paint(&self, ansi: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{ansi}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}
