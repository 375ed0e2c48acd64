//! HTTP downloads: streamed into the cache's partial file, resumed with
//! `Range`, retried with exponential backoff and jitter on transient
//! failures (connection errors, timeouts, 5xx), failed at once on the rest.

use super::cache::{Cache, PartialMeta};
use super::error::ImageError;
use nix::errno::Errno;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::time::Duration;

/// What a download reports while it runs.
pub trait Observer {
    /// `done` of `total` bytes of `url` are on disk.
    fn transferred(&mut self, url: &str, done: u64, total: Option<u64>);
    /// Attempt `attempt` failed with `error`; the next starts after `delay`.
    fn retrying(&mut self, attempt: u32, delay: Duration, error: &str);
    /// Another process holds the image; this one waits for it.
    fn waiting(&mut self, holder: &str);
    /// `done` of `total` bytes are hashed.
    fn verifying(&mut self, done: u64, total: u64);
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Failed attempts in a row (without new bytes) before giving up.
    pub attempts: u32,
    pub connect_timeout: Duration,
    /// A body that sends nothing for this long counts as a dropped connection.
    pub stall_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            attempts: 6,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Room left on the cache's disk beyond the image itself.
const SPARE: u64 = 64 << 20;
const CHUNK: usize = 256 << 10;

enum Failure {
    Transient(String),
    Persistent(ImageError),
}

impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Self {
        Failure::Persistent(e)
    }
}

pub struct Downloader<'o> {
    agent: ureq::Agent,
    policy: Policy,
    observer: &'o mut dyn Observer,
}

impl<'o> Downloader<'o> {
    pub fn new(policy: Policy, observer: &'o mut dyn Observer) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(policy.connect_timeout)
            .timeout_read(policy.stall_timeout)
            .user_agent(concat!("rum/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            policy,
            observer,
        }
    }

    pub fn observer(&mut self) -> &mut dyn Observer {
        self.observer
    }

    /// A small text file such as a sums file; `None` when the server says 404.
    pub fn text(&mut self, url: &str) -> Result<Option<String>, ImageError> {
        self.with_retries(url, |this| match this.agent.get(url).call() {
            Ok(response) => {
                let mut body = String::new();
                response
                    .into_reader()
                    .take(16 << 20)
                    .read_to_string(&mut body)
                    .map_err(|e| (Failure::Transient(format!("reading the body: {e}")), false))?;
                Ok(Some(body))
            }
            Err(ureq::Error::Status(404 | 410, _)) => Ok(None),
            Err(e) => Err((classify(url, e), false)),
        })
    }

    /// Downloads `url` into the partial file of cache entry `name`, resuming
    /// what an earlier run left there. Returns the size.
    pub fn file(&mut self, url: &str, cache: &Cache, name: &str) -> Result<u64, ImageError> {
        self.with_retries(url, |this| this.attempt(url, cache, name))
    }

    fn with_retries<T>(
        &mut self,
        url: &str,
        mut attempt: impl FnMut(&mut Self) -> Result<T, (Failure, bool)>,
    ) -> Result<T, ImageError> {
        let mut in_a_row = 0;
        let mut number = 0;
        loop {
            number += 1;
            let (error, progressed) = match attempt(self) {
                Ok(value) => return Ok(value),
                Err((Failure::Persistent(e), _)) => return Err(e),
                Err((Failure::Transient(error), progressed)) => (error, progressed),
            };
            // A connection that delivered bytes before breaking is not stuck.
            in_a_row = if progressed { 1 } else { in_a_row + 1 };
            if in_a_row >= self.policy.attempts {
                return Err(ImageError::GaveUp {
                    url: url.to_owned(),
                    attempts: number,
                    last: error,
                });
            }
            let delay = backoff(&self.policy, in_a_row);
            self.observer.retrying(number, delay, &error);
            std::thread::sleep(delay);
        }
    }

    /// One request; the bool says whether it wrote any bytes.
    fn attempt(&mut self, url: &str, cache: &Cache, name: &str) -> Result<u64, (Failure, bool)> {
        let no_bytes = |f: Failure| (f, false);
        let (resume_at, validator) = match cache.partial(name) {
            Some((meta, bytes)) if meta.source == url && bytes > 0 => (bytes, meta.validator),
            _ => (0, None),
        };
        let mut request = self.agent.get(url);
        if resume_at > 0 {
            request = request.set("Range", &format!("bytes={resume_at}-"));
            // A changed file then comes whole (200) instead of a mismatched tail.
            if let Some(v) = &validator {
                request = request.set("If-Range", v);
            }
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, r)) if resume_at > 0 => {
                if content_range(&r).map(|(_, total)| total) == Some(Some(resume_at)) {
                    return Ok(resume_at);
                }
                cache.discard_partial(name);
                return Err(no_bytes(Failure::Transient(
                    "the server refused to resume; starting over".into(),
                )));
            }
            Err(e) => return Err(no_bytes(classify(url, e))),
        };
        let (start, total) = if response.status() == 206 {
            match content_range(&response) {
                Some((start, total)) if start == resume_at => (start, total),
                _ => {
                    cache.discard_partial(name);
                    return Err(no_bytes(Failure::Transient(
                        "the server resumed at the wrong offset; starting over".into(),
                    )));
                }
            }
        } else {
            let length = response
                .header("Content-Length")
                .and_then(|v| v.trim().parse::<u64>().ok());
            (0, length)
        };
        if let Some(total) = total {
            check_space(cache, total - start).map_err(|e| no_bytes(e.into()))?;
        }
        let validator = response
            .header("ETag")
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| response.header("Last-Modified"))
            .map(str::to_owned);
        let meta = PartialMeta {
            source: url.to_owned(),
            validator,
            total,
        };
        let mut file = cache
            .open_partial(name, &meta, start > 0)
            .map_err(|e| no_bytes(e.into()))?;
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; CHUNK];
        let mut done = start;
        let progressed = |done: u64| done > start;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error = format!("the connection broke after {done} bytes: {e}");
                    return Err((Failure::Transient(error), progressed(done)));
                }
            };
            if let Err(e) = file.write_all(&buf[..n]) {
                let path = cache.partial_path(name);
                let error = if e.raw_os_error().map(Errno::from_raw) == Some(Errno::ENOSPC) {
                    cache.discard_partial(name);
                    ImageError::DiskFull {
                        dir: cache.root().to_path_buf(),
                        needed: total.map_or(0, |t| t - done),
                        free: crate::fsutil::free_bytes(cache.root()).unwrap_or(0),
                    }
                } else {
                    ImageError::CacheWrite { path, source: e }
                };
                return Err((Failure::Persistent(error), progressed(done)));
            }
            done += n as u64;
            self.observer.transferred(url, done, total);
        }
        if let Some(total) = total
            && done != total
        {
            let error = format!("the body ended after {done} of {total} bytes");
            return Err((Failure::Transient(error), progressed(done)));
        }
        file.sync_all().map_err(|source| {
            let path = cache.partial_path(name);
            (
                Failure::Persistent(ImageError::CacheWrite { path, source }),
                true,
            )
        })?;
        Ok(done)
    }
}

/// Transient: the server or the network may do better in a moment.
fn classify(url: &str, error: ureq::Error) -> Failure {
    match error {
        ureq::Error::Status(code, _) if code == 408 || code == 429 || code >= 500 => {
            Failure::Transient(format!("HTTP {code}"))
        }
        ureq::Error::Status(404 | 410, _) => Failure::Persistent(ImageError::NotFound {
            url: url.to_owned(),
        }),
        ureq::Error::Status(code, _) => Failure::Persistent(ImageError::Http {
            url: url.to_owned(),
            status: code,
        }),
        ureq::Error::Transport(t) => match t.kind() {
            ureq::ErrorKind::InvalidUrl
            | ureq::ErrorKind::UnknownScheme
            | ureq::ErrorKind::TooManyRedirects
            | ureq::ErrorKind::InvalidProxyUrl
            | ureq::ErrorKind::ProxyUnauthorized => Failure::Persistent(ImageError::Request {
                url: url.to_owned(),
                error: t.to_string(),
            }),
            _ => Failure::Transient(t.to_string()),
        },
    }
}

/// `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`): START and TOTAL.
fn content_range(response: &ureq::Response) -> Option<(u64, Option<u64>)> {
    let value = response.header("Content-Range")?.trim();
    let rest = value.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = match range.trim() {
        "*" => 0,
        range => range.split_once('-')?.0.trim().parse().ok()?,
    };
    Some((start, total))
}

fn check_space(cache: &Cache, needed: u64) -> Result<(), ImageError> {
    let free = crate::fsutil::free_bytes(cache.root()).unwrap_or(u64::MAX);
    if free < needed.saturating_add(SPARE) {
        return Err(ImageError::DiskFull {
            dir: cache.root().to_path_buf(),
            needed,
            free,
        });
    }
    Ok(())
}

/// `first_delay · 2^(n-1)`, capped, then scaled by a random 0.5–1.5 so
/// that clients failing together do not retry together.
pub fn backoff(policy: &Policy, failures: u32) -> Duration {
    let exp = policy
        .first_delay
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = exp.min(policy.max_delay);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.5 + (random % 1000) as f64 / 1000.0;
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let policy = Policy::default();
        for (failures, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (40, 30.0)] {
            let d = backoff(&policy, failures).as_secs_f64();
            assert!(d >= base * 0.5 && d <= base * 1.5, "{failures}: {d}");
        }
        let spread: std::collections::BTreeSet<_> =
            (0..20).map(|_| backoff(&policy, 3).as_millis()).collect();
        assert!(spread.len() > 1, "jitter varies: {spread:?}");
    }
}
