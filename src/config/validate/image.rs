//! `[image]`: the base image and its checksum.

use super::Checker;
use crate::config::model::Image;
use crate::config::raw::RawImage;
use crate::config::span::KeyPath;
use crate::image::{Checksum, ImageSource, SourceError};
use std::path::Path;

pub(super) fn image(c: &mut Checker, raw: Option<RawImage>, dir: &Path) -> Option<Image> {
    let path = KeyPath::root().key("image");
    let sha256 = match raw.as_ref().and_then(|r| r.sha256.as_deref()) {
        None => None,
        Some(text) => match Checksum::sha256(text) {
            Some(sum) => Some(sum),
            None => {
                c.problem_with_help(
                    path.key("sha256"),
                    format!("`{text}` is not a SHA-256"),
                    "write the 64 hex digits `sha256sum IMAGE` prints",
                );
                return None;
            }
        },
    };
    let base = image_base(c, raw, dir, path)?;
    Some(Image { base, sha256 })
}

fn image_base(
    c: &mut Checker,
    raw: Option<RawImage>,
    dir: &Path,
    path: KeyPath,
) -> Option<ImageSource> {
    let Some(raw) = raw else {
        c.problem_with_help(
            path,
            "is missing; rum needs a base image",
            "add:\n    [image]\n    base = \"debian-12\"",
        );
        return None;
    };
    let path = path.key("base");
    let value = raw.base.unwrap_or_default();
    let source = match ImageSource::classify(&value, dir) {
        Ok(source) => source,
        Err(SourceError::Empty) => {
            c.problem_with_help(
                path,
                "is missing or empty",
                "set it to a local image file, an http(s) URL, or a name such as \"debian-12\"",
            );
            return None;
        }
        Err(e) => {
            match e.help() {
                Some(help) => c.problem_with_help(path, e.to_string(), help),
                None => c.problem(path, e.to_string()),
            }
            return None;
        }
    };
    // Only a local file can be checked now; downloads are checked when fetched.
    if let ImageSource::Path(file) = &source
        && !c.trust_host_paths
    {
        match std::fs::metadata(file) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                c.problem(path, format!("`{}` is not a file", file.display()));
                return None;
            }
            Err(e) => {
                c.problem(path, format!("`{}` cannot be read: {e}", file.display()));
                return None;
            }
        }
    }
    Some(source)
}
