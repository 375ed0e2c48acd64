//! `rum log`: provisioning logs kept on the host, one per script per attempt.

use crate::lifecycle::Instance;
use crate::output::Reporter;
use crate::provision::run::Attempt;
use crate::{Error, Exit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Latest,
    Failed,
    All,
    Console,
}

fn attempts(instance: &Instance) -> Vec<Attempt> {
    let dir = instance.paths.attempts_dir();
    let mut out: Vec<Attempt> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join(crate::instance::ATTEMPT_RESULT)).ok())
                .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|a| a.number);
    out
}

pub fn run(
    target: &crate::lifecycle::Target,
    failed: bool,
    all: bool,
    console: bool,
    reporter: &Reporter,
) -> Result<Exit, Error> {
    let which = match (failed, all, console) {
        (true, _, _) => Which::Failed,
        (_, true, _) => Which::All,
        (_, _, true) => Which::Console,
        _ => Which::Latest,
    };
    let instance = Instance::open_target(target)?;
    if which == Which::Console {
        let text = std::fs::read(instance.paths.serial_log())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        reporter.result(&text, &serde_json::json!({ "console": text }));
        return Ok(Exit::Success);
    }
    let attempts = attempts(&instance);
    match which {
        Which::All => {
            let mut lines = Vec::new();
            for a in &attempts {
                for s in &a.scripts {
                    let code = s
                        .exit_code
                        .map(|c| format!(" (exit code {c})"))
                        .unwrap_or_default();
                    lines.push(format!(
                        "attempt {:>3}  {:<6} {:<12} {}{code}  {}",
                        a.number,
                        s.phase,
                        s.name,
                        s.state,
                        s.log.display()
                    ));
                }
            }
            let text = if lines.is_empty() {
                "No provisioning has run yet".to_owned()
            } else {
                lines.join("\n")
            };
            reporter.result(&text, &serde_json::json!({ "attempts": attempts }));
        }
        Which::Latest | Which::Failed => {
            let picked = match which {
                Which::Failed => attempts.iter().rev().find_map(|a| {
                    a.scripts
                        .iter()
                        .rev()
                        .find(|s| s.state == "failed")
                        .map(|s| (a, vec![s]))
                }),
                _ => attempts.last().map(|a| {
                    (
                        a,
                        a.scripts
                            .iter()
                            .filter(|s| s.state != "not_run" && s.state != "skipped")
                            .collect(),
                    )
                }),
            };
            let Some((attempt, scripts)) = picked else {
                let what = if which == Which::Failed {
                    "No script has failed"
                } else {
                    "No provisioning has run yet"
                };
                reporter.result(what, &serde_json::json!({ "logs": [] }));
                return Ok(Exit::Success);
            };
            let mut text = String::new();
            let mut logs = Vec::new();
            for s in scripts {
                let body = std::fs::read(&s.log)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let code = s
                    .exit_code
                    .map(|c| format!(", exit code {c}"))
                    .unwrap_or_default();
                text.push_str(&format!(
                    "==> attempt {}, {} script `{}`: {}{code}\n{body}",
                    attempt.number, s.phase, s.name, s.state
                ));
                logs.push(serde_json::json!({ "attempt": attempt.number, "script": s.name, "state": s.state, "exit_code": s.exit_code, "log": body }));
            }
            reporter.result(text.trim_end(), &serde_json::json!({ "logs": logs }));
        }
        Which::Console => unreachable!("handled above"),
    }
    Ok(Exit::Success)
}
