//! TOML and serde errors turned into problems that name the key.

use super::error::Problem;
use super::span::{KeyPath, SpanIndex};
use super::suggest::closest;
use std::ops::Range;

/// Describes a failed `toml::from_str` in rum's terms.
pub fn problem_from_toml(
    error: &toml::de::Error,
    source: &str,
    index: &SpanIndex,
) -> (Problem, Option<Range<usize>>) {
    let span = error.span();
    let message = error.message().trim().to_owned();
    let at = span
        .as_ref()
        .and_then(|s| index.path_at(s.start))
        .map(KeyPath::trim_indices);

    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = expected_names(expected);
        let path = match at {
            Some(path) if path.leaf_key() == Some(field) => path,
            Some(path) => path.key(field),
            None => KeyPath::root().key(field),
        };
        let section = parent_label(&path);
        let hint = closest(field, allowed.iter().map(String::as_str))
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        let help = if allowed.is_empty() {
            format!("{hint}remove it")
        } else {
            format!("{hint}Allowed {section}: {}", allowed.join(", "))
        };
        return (
            Problem {
                path,
                message: "is not a known key".into(),
                help: Some(help),
            },
            span,
        );
    }

    if error.span().is_some() && index_is_empty_for(source, index) {
        // The document itself does not parse: name the key on that line.
        let line_key = span.as_ref().and_then(|s| key_on_line(source, s.start));
        let path = line_key
            .map(|k| KeyPath::root().key(&k))
            .unwrap_or_default();
        let text = format!("has a TOML syntax error: {}", message.replace('\n', "; "));
        let text = if path.segments().is_empty() {
            capitalize(&text["has a ".len()..])
        } else {
            text
        };
        // `[provision.system]` beside `[[provision.system]]` reads as a duplicate.
        let steps = path.to_string().starts_with("provision.");
        let help = (steps && message.contains("duplicate key")).then(|| {
            "a phase is one table or an array of tables: write every step as [[provision.…]]"
                .to_owned()
        });
        return (
            Problem {
                path,
                message: text,
                help,
            },
            span,
        );
    }

    let path = at.unwrap_or_default();
    let message = friendly_types(&message);
    (
        Problem {
            path,
            message: format!("is invalid: {message}"),
            help: None,
        },
        span,
    )
}

/// serde lists allowed fields as "expected one of `a`, `b`" or "expected `a` or `b`".
fn expected_names(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, name)| name.to_owned())
        .collect()
}

fn parent_label(path: &KeyPath) -> String {
    match path.parent().filter(|p| !p.segments().is_empty()) {
        Some(parent) => format!("in [{}]", parent.trim_indices()),
        None => "at the top level".into(),
    }
}

fn index_is_empty_for(source: &str, index: &SpanIndex) -> bool {
    index.path_at(0).is_none() && toml::de::DeTable::parse(source).is_err()
}

/// The key assigned on the line holding `offset`, or the table a header names.
fn key_on_line(source: &str, offset: usize) -> Option<String> {
    let start = source[..offset.min(source.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = source[start..].lines().next()?.trim();
    let key = if let Some(header) = line.strip_prefix('[') {
        header.trim_start_matches('[').split(']').next()?.trim()
    } else {
        line.split('=').next()?.trim()
    };
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
    valid.then(|| key.replace('"', ""))
}

/// serde names Rust types; users write TOML.
fn friendly_types(message: &str) -> String {
    let mut text = message.to_owned();
    for (rust, toml) in [
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected an array"),
        ("expected struct ", "expected a table "),
    ] {
        text = text.replace(rust, toml);
    }
    text
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
