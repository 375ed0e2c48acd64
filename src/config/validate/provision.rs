//! `[provision.*]`: the steps rum runs in the guest, each phase one table
//! (one step) or an array of tables (steps in order).

use super::Checker;
use crate::config::model::{MAX_RETRIES, MAX_STEPS, Script, Step};
use crate::config::names;
use crate::config::raw::{RawStep, RawSteps};
use crate::config::span::KeyPath;
use crate::image::source::resolve_host_path;
use std::collections::BTreeSet;
use std::path::Path;

/// Names a step may not take: `boot` is `rum retry --from boot`'s, and
/// `filesystems` is the generated step's.
const RESERVED: [&str; 2] = ["boot", "filesystems"];

/// Both phases' steps; names are unique across both.
pub(super) fn steps(
    c: &mut Checker,
    system: Option<RawSteps>,
    boot: Option<RawSteps>,
    dir: &Path,
) -> (Vec<Step>, Vec<Step>) {
    let mut seen = BTreeSet::new();
    let root = KeyPath::root().key("provision");
    let system = phase(c, system, root.key("system"), "system", dir, &mut seen);
    let boot = phase(c, boot, root.key("boot"), "boot", dir, &mut seen);
    (system, boot)
}

fn phase(
    c: &mut Checker,
    raw: Option<RawSteps>,
    path: KeyPath,
    phase: &str,
    dir: &Path,
    seen: &mut BTreeSet<String>,
) -> Vec<Step> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let (raw, array) = raw.into_steps();
    if raw.len() > MAX_STEPS {
        c.problem(
            path,
            format!("has {} steps; a phase holds at most {MAX_STEPS}", raw.len()),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, step) in raw.into_iter().enumerate() {
        let path = if array { path.index(i) } else { path.clone() };
        let name = name(c, &step, &path, format!("{phase}-{}", i + 1), seen);
        let retries = match step.retries {
            None => Some(0),
            Some(n @ 0..=MAX_RETRIES) => Some(n as u8),
            Some(n) => {
                c.problem(
                    path.key("retries"),
                    format!("is {n}; give 0 to {MAX_RETRIES} (retries of a step that fails)"),
                );
                None
            }
        };
        if phase == "boot" && step.checkpoint.is_some() {
            c.problem(
                path.key("checkpoint"),
                "is for system steps; boot steps run on every boot and take no checkpoint",
            );
        }
        let checkpoint = step.checkpoint.unwrap_or(true);
        if let (Some(script), Some(name), Some(retries)) =
            (script(c, step, &path, dir), name, retries)
        {
            out.push(Step {
                name,
                script,
                retries,
                checkpoint,
            });
        }
    }
    out
}

fn name(
    c: &mut Checker,
    step: &RawStep,
    path: &KeyPath,
    default: String,
    seen: &mut BTreeSet<String>,
) -> Option<String> {
    let given = step.name.is_some();
    let name = step.name.clone().unwrap_or(default);
    if given {
        if let Err(why) = names::check_name(&name) {
            c.problem(path.key("name"), why);
            return None;
        }
        if RESERVED.contains(&name.as_str()) {
            c.problem(
                path.key("name"),
                format!("`{name}` is reserved; choose another step name"),
            );
            return None;
        }
    }
    if !seen.insert(name.clone()) {
        c.problem(
            path.key("name"),
            format!("`{name}` names another step too; step names are unique across [provision.system] and [provision.boot]"),
        );
        return None;
    }
    Some(name)
}

fn script(c: &mut Checker, raw: RawStep, path: &KeyPath, dir: &Path) -> Option<Script> {
    match (raw.script, raw.file) {
        (Some(_), Some(_)) => {
            c.problem(
                path.key("file"),
                "is given together with `script`; use one of them",
            );
            None
        }
        (Some(text), None) => Some(Script::Inline(text)),
        (None, Some(file)) => {
            let resolved = resolve_host_path(&file, dir);
            if c.trust_host_paths || resolved.is_file() {
                Some(Script::File(resolved))
            } else {
                c.problem(
                    path.key("file"),
                    format!("`{}` is not a readable file", resolved.display()),
                );
                None
            }
        }
        (None, None) => {
            c.problem(
                path.key("script"),
                "is missing; give `script = \"…\"` or `file = \"path/to/script.sh\"`",
            );
            None
        }
    }
}
