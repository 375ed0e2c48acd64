//! `[provision.*]`: the scripts rum runs in the guest.

use super::Checker;
use crate::config::model::Script;
use crate::config::raw::RawScript;
use crate::config::span::KeyPath;
use crate::image::source::resolve_host_path;
use std::path::Path;

pub(super) fn script(
    c: &mut Checker,
    raw: Option<RawScript>,
    path: KeyPath,
    dir: &Path,
) -> Option<Script> {
    let raw = raw?;
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
            if resolved.is_file() {
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
