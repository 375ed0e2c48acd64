//! Where a base image comes from, and the one rule that reads a value as
//! such: `[image] base` in rum.toml and the argument of `rum image pull` alike.

use super::known;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The URL schemes rum downloads images over.
pub const SCHEMES: [&str; 2] = ["http", "https"];

/// Endings that make a bare file name a path rather than an image name.
const IMAGE_EXTENSIONS: [&str; 3] = [".qcow2", ".img", ".raw"];

/// Where the base image comes from. Only the form is checked here; fetching
/// and verifying happen when the image is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum ImageSource {
    /// A local qcow2 or raw file, absolute.
    Path(PathBuf),
    /// An http(s) URL.
    Url(String),
    /// A name such as `debian-12` that stands for an official cloud image.
    Shorthand(String),
    /// The name of an image `rum image bake` made, in the cache.
    Baked(String),
}

/// Why a value is not an image source. Each message reads on its own and
/// after a key (`image.base` …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "No image given; name a local image file, an http(s) URL, or an image such as \"debian-12\""
    )]
    Empty,
    #[error("`{0}` is not a valid URL")]
    BadUrl(String),
    #[error("`{value}` uses an unsupported scheme; use http:// or https://")]
    UnsupportedScheme { value: String, scheme: String },
    #[error("`{0}` is neither a path, a URL nor an image name")]
    NotASource(String),
    #[error("`{0}` is not an image name rum knows")]
    UnknownName(String),
}

impl SourceError {
    /// What to write instead, when there is more to say than the message.
    pub fn help(&self) -> Option<String> {
        match self {
            SourceError::UnknownName(name) => Some(format!(
                "use one of {}, an image `rum image bake` made (`rum image list`), an http(s) URL, or a path such as \"./{name}\"",
                known::names().collect::<Vec<_>>().join(", ")
            )),
            _ => None,
        }
    }
}

impl ImageSource {
    /// Reads `value` as an image source:
    ///
    /// - `scheme://…` is a URL; `http` and `https` (any case) are the only
    ///   schemes, and the URL needs a host and no whitespace;
    /// - a value with a `/`, starting with `.` or `~`, or ending in `.qcow2`,
    ///   `.img` or `.raw` is a local file: `~/…` under `$HOME`, a relative one
    ///   under `dir` (the config file's directory, or the working directory
    ///   on the command line). Whether it exists is not checked here;
    /// - anything else must be a name rum knows (`debian-12`, …).
    pub fn classify(value: &str, dir: &Path) -> Result<Self, SourceError> {
        if value.trim().is_empty() {
            return Err(SourceError::Empty);
        }
        if let Some((scheme, rest)) = split_scheme(value) {
            let lower = scheme.to_ascii_lowercase();
            if !SCHEMES.contains(&lower.as_str()) {
                return Err(SourceError::UnsupportedScheme {
                    value: value.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() || value.chars().any(char::is_whitespace) {
                return Err(SourceError::BadUrl(value.to_owned()));
            }
            return Ok(ImageSource::Url(format!("{lower}://{rest}")));
        }
        let looks_like_path = value.contains('/')
            || value.starts_with('.')
            || value.starts_with('~')
            || IMAGE_EXTENSIONS.iter().any(|ext| value.ends_with(ext));
        if looks_like_path {
            return Ok(ImageSource::Path(resolve_host_path(value, dir)));
        }
        if !value
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'))
        {
            return Err(SourceError::NotASource(value.to_owned()));
        }
        if known::lookup(value).is_some() {
            return Ok(ImageSource::Shorthand(value.to_owned()));
        }
        // Baked names never clash with the built-in ones (bake refuses).
        if super::baked::is_cached(value) {
            return Ok(ImageSource::Baked(value.to_owned()));
        }
        Err(SourceError::UnknownName(value.to_owned()))
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Path(path) => write!(f, "{}", path.display()),
            ImageSource::Url(url) => f.write_str(url),
            ImageSource::Shorthand(name) | ImageSource::Baked(name) => f.write_str(name),
        }
    }
}

/// `scheme` and the rest of `scheme://rest`. What precedes `://` is taken for
/// a scheme unless it holds a `/` (then the value is a path).
fn split_scheme(value: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = value.split_once("://")?;
    (!scheme.contains('/')).then_some((scheme, rest))
}

/// A host path as rum.toml (and rum's command line) writes it: `~/x` is under
/// `$HOME`, a relative path starts at `dir`.
pub fn resolve_host_path(text: &str, dir: &Path) -> PathBuf {
    if let Some(rest) = text.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    dir.join(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(value: &str) -> Result<ImageSource, SourceError> {
        ImageSource::classify(value, Path::new("/project"))
    }

    #[test]
    fn http_and_https_urls() {
        for url in ["http://127.0.0.1:8/a/disk.qcow2", "https://h/x.img?sig=1"] {
            assert_eq!(classify(url), Ok(ImageSource::Url(url.into())));
        }
        // Schemes are case-insensitive; rum keeps them in lower case.
        assert_eq!(
            classify("HTTPS://h/x.img"),
            Ok(ImageSource::Url("https://h/x.img".into()))
        );
        for bad in ["http://", "https:///x.img", "http://h/a b.img", "http://?x"] {
            assert_eq!(classify(bad), Err(SourceError::BadUrl(bad.into())), "{bad}");
        }
    }

    #[test]
    fn other_schemes_name_the_supported_ones() {
        for (value, scheme) in [
            ("ftp://h/x.qcow2", "ftp"),
            ("file:///x.qcow2", "file"),
            ("s3://bucket/x.img", "s3"),
            ("git+ssh://h/x", "git+ssh"),
            (" https://h/x", " https"),
            ("://h/x", ""),
        ] {
            let err = classify(value).unwrap_err();
            assert_eq!(
                err,
                SourceError::UnsupportedScheme {
                    value: value.into(),
                    scheme: scheme.into()
                }
            );
            assert!(err.to_string().contains("use http:// or https://"), "{err}");
        }
    }

    #[test]
    fn relative_paths_start_at_the_given_directory() {
        for (value, path) in [
            ("img.qcow2", "/project/img.qcow2"),
            ("disk.img", "/project/disk.img"),
            ("x.raw", "/project/x.raw"),
            ("./missing.qcow2", "/project/./missing.qcow2"),
            ("../images/base", "/project/../images/base"),
            ("sub/dir/base", "/project/sub/dir/base"),
            ("/abs/base.qcow2", "/abs/base.qcow2"),
            (".hidden", "/project/.hidden"),
        ] {
            assert_eq!(
                classify(value),
                Ok(ImageSource::Path(path.into())),
                "{value}"
            );
        }
        let other = ImageSource::classify("img.qcow2", Path::new("/elsewhere"));
        assert_eq!(other, Ok(ImageSource::Path("/elsewhere/img.qcow2".into())));
        // What precedes `://` in a path is no scheme.
        assert_eq!(
            classify("./a://b.qcow2"),
            Ok(ImageSource::Path("/project/./a://b.qcow2".into()))
        );
    }

    #[test]
    fn home_relative_paths_are_under_home() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        assert_eq!(
            classify("~/images/base.qcow2"),
            Ok(ImageSource::Path(
                PathBuf::from(home).join("images/base.qcow2")
            ))
        );
    }

    #[test]
    fn known_unknown_and_impossible_names() {
        for name in known::names() {
            assert_eq!(classify(name), Ok(ImageSource::Shorthand(name.into())));
        }
        let err = classify("fedora-40").unwrap_err();
        assert_eq!(err, SourceError::UnknownName("fedora-40".into()));
        let help = err.help().unwrap();
        assert!(
            help.contains("debian-12") && help.contains("\"./fedora-40\""),
            "{help}"
        );
        assert_eq!(
            classify("debian 12"),
            Err(SourceError::NotASource("debian 12".into()))
        );
        assert_eq!(
            classify("docker:debian"),
            Err(SourceError::NotASource("docker:debian".into()))
        );
        assert_eq!(classify(""), Err(SourceError::Empty));
        assert_eq!(classify("  "), Err(SourceError::Empty));
    }

    #[test]
    fn shown_as_written_in_rum_toml() {
        assert_eq!(classify("debian-12").unwrap().to_string(), "debian-12");
        assert_eq!(classify("x.img").unwrap().to_string(), "/project/x.img");
        assert_eq!(classify("https://h/x").unwrap().to_string(), "https://h/x");
    }
}
