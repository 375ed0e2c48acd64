//! Downloads into the image cache against a local HTTP server (127.0.0.1
//! only) that injects faults: dropped connections, 503s, 404s, bad
//! checksums, slow bodies, concurrent pulls. Drives the real `rum` binary;
//! no VM is needed.

#[path = "support/audit.rs"]
mod audit;
mod cli;
#[path = "support/http.rs"]
mod http;

use cli::Sandbox;
use http::{Fault, FileServer};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

const MIB: usize = 1 << 20;

/// Incompressible bytes that are not a compressed-file magic.
fn body(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 0x40
        })
        .collect()
}

/// A server with `len` random bytes at `path`, served with `faults` first.
fn serving(path: &str, len: usize, seed: u8, faults: Vec<Fault>) -> (FileServer, Vec<u8>) {
    let server = FileServer::start();
    let data = body(len, seed);
    server.add(path, data.clone());
    server.faults(path, faults);
    (server, data)
}

/// A body sent `chunk` bytes at a time, `ms` apart.
fn slow(chunk: usize, ms: u64) -> Fault {
    Fault::Slow {
        chunk,
        delay: Duration::from_millis(ms),
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pull(sandbox: &Sandbox, url: &str, sha: Option<&str>) -> Output {
    let mut args = vec!["image", "pull", url];
    if let Some(sha) = sha {
        args.extend(["--sha256", sha]);
    }
    sandbox.rum(&args)
}

/// `rum image list -o json`: one object per cached or partial image.
fn listed(sandbox: &Sandbox) -> Vec<Value> {
    let out = sandbox.rum(&["-o", "json", "image", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    let event: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    event["data"].as_array().unwrap().clone()
}

fn images_dir(sandbox: &Sandbox) -> PathBuf {
    sandbox.root().join("cache/rum/images")
}

/// Files under `.partial`: a failed download must leave none that could pass for an image.
fn partial_files(sandbox: &Sandbox) -> Vec<String> {
    std::fs::read_dir(images_dir(sandbox).join(".partial"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_dropped_connection_resumes_and_the_result_verifies() {
    let sandbox = Sandbox::new();
    let drops = vec![Fault::DropAfter(MIB as u64), Fault::DropAfter(MIB as u64)];
    let (server, data) = serving("/img/disk.raw", 3 * MIB, 1, drops);
    let url = server.url("/img/disk.raw");
    let out = pull(&sandbox, &url, Some(&sha256(&data)));
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("retrying in").count(), 2, "{stderr}");

    let served = server.served("/img/disk.raw");
    let starts: Vec<_> = served.iter().map(|s| s.range_start).collect();
    assert_eq!(
        starts,
        [None, Some(MIB as u64), Some(2 * MIB as u64)],
        "each attempt resumes where the last stopped: {served:?}"
    );
    let sent: u64 = served.iter().map(|s| s.body_bytes).sum();
    assert_eq!(sent, data.len() as u64, "no byte was fetched twice");

    let images = listed(&sandbox);
    assert_eq!(images.len(), 1, "{images:?}");
    let image = &images[0]["image"];
    assert_eq!(image["status"], "verified");
    assert_eq!(image["sha256"], sha256(&data));
    assert_eq!(image["source"], url);
    assert_eq!(image["format"], "raw");
    let path = PathBuf::from(image["path"].as_str().unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), data);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400, "a cached image is never written again");
    let exposed = audit::exposed(&sandbox.root().join("cache/rum"));
    assert!(
        exposed.is_empty(),
        "open to other users:\n{}",
        exposed.join("\n")
    );
    assert!(
        partial_files(&sandbox).is_empty(),
        "{:?}",
        partial_files(&sandbox)
    );

    // A second pull reuses the cache without a request.
    let out = pull(&sandbox, &url, Some(&sha256(&data)));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.served("/img/disk.raw").len(), 3);
}

#[test]
fn an_interrupted_pull_resumes_in_the_next_run() {
    let sandbox = Sandbox::new();
    let (server, data) = serving("/disk.raw", 4 * MIB, 2, vec![slow(64 << 10, 100)]);
    let url = server.url("/disk.raw");
    let sha = sha256(&data);
    let mut child = sandbox
        .command(
            &sandbox.project(),
            &["image", "pull", &url, "--sha256", &sha],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial_dir = images_dir(&sandbox).join(".partial");
    let partial = || {
        std::fs::read_dir(&partial_dir)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| !e.file_name().to_string_lossy().ends_with(".json"))
            .and_then(|e| e.metadata().ok())
            .map_or(0, |m| m.len())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while partial() < 512 << 10 {
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Neither delete nor clear touches an image another rum is downloading.
    let name = listed(&sandbox)[0]["image"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = sandbox.rum(&["image", "delete", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in use by another rum (pid"),
        "{}",
        text(&out)
    );
    let out = sandbox.rum(&["image", "clear"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted 0"),
        "{}",
        text(&out)
    );
    // SIGKILL: like a power cut, nothing gets to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = partial();
    assert!(kept > 0 && kept < data.len() as u64, "{kept}");
    assert!(
        listed(&sandbox)[0]["image"]["status"] == "partial",
        "an unfinished download is listed as such, never as an image"
    );

    let out = pull(&sandbox, &url, Some(&sha));
    assert!(out.status.success(), "{}", text(&out));
    // Recorded when each response ends: the killed one may come last.
    let served = server.served("/disk.raw");
    assert_eq!(served.len(), 2, "{served:?}");
    let resumed = served.iter().find(|s| s.status == 206).expect("a 206");
    assert_eq!(resumed.range_start, Some(kept), "{served:?}");
    assert_eq!(resumed.body_bytes, data.len() as u64 - kept);
    let image = &listed(&sandbox)[0]["image"];
    assert_eq!(
        std::fs::read(image["path"].as_str().unwrap()).unwrap(),
        data
    );
}

/// `rum image pull` killed with SIGKILL once the download is whole (before
/// it is verified) and half-way through moving it into the cache: the next
/// pull finishes with the right bytes, and no half-made entry is listed.
#[test]
fn a_pull_killed_at_each_step_is_finished_by_the_next() {
    let sandbox = Sandbox::new();
    let (server, data) = serving("/disk.raw", 2 * MIB, 3, vec![]);
    let url = server.url("/disk.raw");
    let sha = sha256(&data);
    for point in ["image_verify", "image_commit"] {
        let gate = sandbox.root().join(format!("{point}.gate"));
        let reached = sandbox.root().join(format!("{point}.gate.reached"));
        let mut child = sandbox
            .command(
                &sandbox.project(),
                &["image", "pull", &url, "--sha256", &sha],
            )
            .env("RUM_TEST_PAUSE_AT", point)
            .env("RUM_TEST_GATE", &gate)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !reached.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "never reached {point}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for entry in listed(&sandbox) {
            assert_ne!(
                entry["image"]["status"], "verified",
                "nothing verified after a kill at {point}: {entry}"
            );
        }
        let out = pull(&sandbox, &url, Some(&sha));
        assert!(out.status.success(), "after {point}: {}", text(&out));
        let images = listed(&sandbox);
        assert_eq!(images.len(), 1, "after {point}: {images:?}");
        let image = &images[0]["image"];
        assert_eq!(image["status"], "verified");
        assert_eq!(
            std::fs::read(image["path"].as_str().unwrap()).unwrap(),
            data
        );
        assert!(
            partial_files(&sandbox).is_empty(),
            "after {point}: {:?}",
            partial_files(&sandbox)
        );
        let name = image["name"].as_str().unwrap().to_owned();
        let out = sandbox.rum(&["image", "delete", &name]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // Each kill left a whole download: the next pull only verified it.
    let served = server.served("/disk.raw");
    let whole = served.iter().filter(|s| s.status == 200).count();
    assert_eq!(whole, 2, "one download per kill point: {served:?}");
}

#[test]
fn a_503_twice_backs_off_then_succeeds() {
    let sandbox = Sandbox::new();
    let (server, data) = serving("/d.raw", MIB, 3, vec![Fault::Status(503); 2]);
    let out = sandbox.rum(&[
        "-o",
        "json",
        "image",
        "pull",
        &server.url("/d.raw"),
        "--sha256",
        &sha256(&data),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let retries: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(retries.len(), 2, "{events:?}");
    for (n, message) in retries.iter().enumerate() {
        assert!(
            message.contains(&format!("attempt {} failed (HTTP 503)", n + 1)),
            "{message}"
        );
        assert!(message.contains("retrying in"), "{message}");
    }
    let statuses: Vec<u16> = server.served("/d.raw").iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[test]
fn a_404_fails_at_once_and_caches_nothing() {
    let sandbox = Sandbox::new();
    let server = FileServer::start();
    let out = pull(
        &sandbox,
        &server.url("/missing.qcow2"),
        Some(&"a".repeat(64)),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist (HTTP 404)"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert_eq!(server.served("/missing.qcow2").len(), 1, "no retry");
    assert!(listed(&sandbox).is_empty());
}

#[test]
fn a_bad_checksum_fails_and_caches_nothing() {
    let sandbox = Sandbox::new();
    let (server, data) = serving("/dir/disk.raw", 2 * MIB, 4, vec![]);
    let wrong = sha256(b"something else");
    let out = pull(&sandbox, &server.url("/dir/disk.raw"), Some(&wrong));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match its checksum"), "{stderr}");
    assert!(
        stderr.contains(&wrong) && stderr.contains(&sha256(&data)),
        "{stderr}"
    );
    assert!(listed(&sandbox).is_empty());
    assert!(
        partial_files(&sandbox).is_empty(),
        "{:?}",
        partial_files(&sandbox)
    );

    // The same through a distro-style sums file beside the image.
    server.add(
        "/dir/SHA256SUMS",
        format!("{wrong} *disk.raw\n").into_bytes(),
    );
    let out = pull(&sandbox, &server.url("/dir/disk.raw"), None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHA256SUMS"), "{stderr}");
    assert!(listed(&sandbox).is_empty());
}

#[test]
fn published_sums_files_verify_without_a_configured_checksum() {
    let sandbox = Sandbox::new();
    let (server, data) = serving("/a/disk.raw", MIB, 5, vec![]);
    // No SHA256SUMS here: rum goes on to SHA512SUMS, in the GNU format Debian uses.
    let sha512 = hex(&Sha512::digest(&data));
    server.add(
        "/a/SHA512SUMS",
        format!("{}  other.raw\n{sha512}  disk.raw\n", "0".repeat(128)).into_bytes(),
    );
    let out = pull(&sandbox, &server.url("/a/disk.raw"), None);
    assert!(out.status.success(), "{}", text(&out));
    let image = &listed(&sandbox)[0]["image"];
    assert_eq!(image["verified"]["algorithm"], "sha512");
    assert_eq!(image["verified"]["hex"], sha512);
    assert_eq!(image["verified_against"], server.url("/a/SHA512SUMS"));
    assert_eq!(image["sha256"], sha256(&data));

    // A query string is not part of the file name looked up in the sums file.
    server.add("/c/disk.raw?token=1", data.clone());
    server.add(
        "/c/SHA256SUMS",
        format!("{}  disk.raw\n", sha256(&data)).into_bytes(),
    );
    let out = pull(&sandbox, &server.url("/c/disk.raw?token=1"), None);
    assert!(out.status.success(), "{}", text(&out));

    // Without any checksum there is no download at all.
    server.add("/b/disk.raw", data);
    let out = pull(&sandbox, &server.url("/b/disk.raw"), None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No published checksum"),
        "{}",
        text(&out)
    );
    assert!(server.served("/b/disk.raw").is_empty());
}

#[test]
fn a_compressed_image_is_refused() {
    let sandbox = Sandbox::new();
    let server = FileServer::start();
    let mut data = vec![0x1f, 0x8b, 0x08, 0x00];
    data.extend(body(4096, 6));
    server.add("/disk.img.gz", data.clone());
    let out = pull(&sandbox, &server.url("/disk.img.gz"), Some(&sha256(&data)));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gzip-compressed"),
        "{}",
        text(&out)
    );
    assert!(listed(&sandbox).is_empty());
}

#[test]
fn a_slow_body_shows_progress() {
    let sandbox = Sandbox::new();
    let (server, data) = serving("/slow.raw", 3 * MIB, 7, vec![slow(256 << 10, 500)]);
    let out = pull(&sandbox, &server.url("/slow.raw"), Some(&sha256(&data)));
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("downloading slow.raw:"))
        .collect();
    assert!(lines.len() >= 2, "progress lines while it ran:\n{stderr}");
    assert!(lines[0].contains("of 3.00 MiB"), "{}", lines[0]);
    assert!(lines[0].contains("/s"), "a rate: {}", lines[0]);
    assert!(lines[0].contains("left"), "an ETA: {}", lines[0]);
    assert!(
        lines
            .last()
            .unwrap()
            .contains("3.00 MiB of 3.00 MiB (100%)"),
        "{stderr}"
    );
}

#[test]
fn two_concurrent_pulls_of_one_url_transfer_it_once() {
    let sandbox = Sandbox::new();
    // Slow enough (3 s) that the second starts while the first downloads.
    let (server, data) = serving("/shared.raw", 2 * MIB, 8, vec![slow(64 << 10, 100); 2]);
    let url = server.url("/shared.raw");
    let sha = sha256(&data);
    let children: Vec<_> = (0..2)
        .map(|_| {
            sandbox
                .command(
                    &sandbox.project(),
                    &["image", "pull", &url, "--sha256", &sha],
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outputs {
        assert!(out.status.success(), "{}", text(out));
    }
    let served = server.served("/shared.raw");
    assert_eq!(served.len(), 1, "one transfer: {served:?}");
    assert_eq!(served[0].body_bytes, data.len() as u64);
    let waited = outputs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("waiting for another rum"))
        .count();
    assert_eq!(waited, 1, "the second waits for the first");
    assert_eq!(listed(&sandbox).len(), 1);
}

#[test]
fn delete_and_clear_empty_the_cache() {
    let sandbox = Sandbox::new();
    let server = FileServer::start();
    let (a, b) = (body(MIB, 9), body(MIB, 10));
    server.add("/a.raw", a.clone());
    server.add("/b.raw", b.clone());
    for (path, data) in [("/a.raw", &a), ("/b.raw", &b)] {
        let out = pull(&sandbox, &server.url(path), Some(&sha256(data)));
        assert!(out.status.success(), "{}", text(&out));
    }
    let names: Vec<String> = listed(&sandbox)
        .iter()
        .map(|i| i["image"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2);

    let out = sandbox.rum(&["image", "delete", "no-such-image"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No cached image `no-such-image`"));

    let out = sandbox.rum(&["image", "delete", &names[0]]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1.00 MiB freed"),
        "{}",
        text(&out)
    );
    assert_eq!(listed(&sandbox).len(), 1);
    assert!(!images_dir(&sandbox).join(&names[0]).exists());

    let out = sandbox.rum(&["image", "clear"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted 1 cached image(s)"),
        "{}",
        text(&out)
    );
    assert!(listed(&sandbox).is_empty());
}

#[test]
fn pull_of_a_local_path_or_unknown_name_is_a_usage_error() {
    let sandbox = Sandbox::new();
    for (arg, says) in [("img.qcow2", "is a local file"), ("fedora-40", "debian-12")] {
        let out = sandbox.rum(&["image", "pull", arg]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{}",
            text(&out)
        );
    }
    let out = sandbox.rum(&["image", "pull", "debian-12", "--sha256", "xyz"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A size-limited tmpfs over the sandbox's cache dir, unmounted on drop.
struct SmallCache {
    mount: PathBuf,
}

impl SmallCache {
    /// `None` (after a visible line) without root, unless `RUM_E2E=1` demands it.
    fn new(sandbox: &Sandbox, mib: u64) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("RUM_E2E").is_none(),
                "RUM_E2E=1: the disk-full test mounts a tmpfs and needs root"
            );
            eprintln!("skipped: the disk-full test mounts a tmpfs and needs root");
            return None;
        }
        let mount = sandbox.root().join("cache");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "rum-test-cache",
            ])
            .arg(&mount)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", mount.display());
        Some(Self { mount })
    }
}

impl Drop for SmallCache {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}

#[test]
fn a_full_disk_fails_at_once_and_caches_nothing() {
    let sandbox = Sandbox::new();
    let Some(small) = SmallCache::new(&sandbox, 128) else {
        return;
    };
    let server = FileServer::start();

    // Known not to fit before a byte is fetched.
    let big = body(100 * MIB, 11);
    server.add("/big.raw", big.clone());
    let out = pull(&sandbox, &server.url("/big.raw"), Some(&sha256(&big)));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Not enough space"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert_eq!(server.served("/big.raw").len(), 1);
    drop(big);

    // Fits at the start, then the disk fills up under the download.
    let data = body(40 * MIB, 12);
    server.add("/fills.raw", data.clone());
    server.faults("/fills.raw", vec![slow(MIB, 150)]);
    let child = sandbox
        .command(
            &sandbox.project(),
            &[
                "image",
                "pull",
                &server.url("/fills.raw"),
                "--sha256",
                &sha256(&data),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while partial_files(&sandbox).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let filler = small.mount.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x55u8; MIB];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Not enough space"), "{stderr}");
    assert!(!stderr.contains("retrying"), "fails at once: {stderr}");
    std::fs::remove_file(&filler).unwrap();
    assert!(listed(&sandbox).is_empty());
    let leftovers = partial_files(&sandbox);
    assert!(
        leftovers.is_empty(),
        "the partial file is deleted: {leftovers:?}"
    );
}
