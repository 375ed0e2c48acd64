//! Builds the guest agent as a static x86_64 binary and hands it to
//! `src/agent_binary.rs`, so every `rum` carries the matching agent.
//!
//! A nested `cargo build -p rum-agent` with its own target dir (the outer
//! cargo holds the lock on ours): `<target>/agent`, shared by every profile
//! and by check/clippy runs, so the agent is compiled once and then only when
//! `agent/` changes. `RUM_AGENT_BINARY=/path/to/rum-agent` skips the build
//! and embeds that file instead.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const PROFILE: &str = "agent";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=agent/src");
    println!("cargo:rerun-if-changed=agent/Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    // Profiles live there.
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-env-changed=RUM_AGENT_BINARY");

    let binary = match env::var_os("RUM_AGENT_BINARY") {
        Some(path) => PathBuf::from(path),
        None => build_agent(&manifest_dir, &out_dir),
    };
    let dest = out_dir.join("rum-agent");
    fs::copy(&binary, &dest)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", binary.display(), dest.display()));
}

fn build_agent(manifest_dir: &Path, out_dir: &Path) -> PathBuf {
    let target_dir = agent_target_dir(out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir)
        .args(["build", "-p", "rum-agent", "--bin", "rum-agent"])
        .args(["--profile", PROFILE, "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // With an explicit --target these reach only the agent, not build scripts or proc-macros.
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    // What the outer cargo set for this build script must not leak into the
    // nested build (clippy's wrapper, the outer target dir and flags).
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the guest agent: {e}"));
    assert!(
        status.success(),
        "building the guest agent (rum-agent) failed: {status}"
    );
    target_dir.join(TARGET).join(PROFILE).join("rum-agent")
}

/// `<target>/agent`: the target dir is the nearest ancestor of OUT_DIR with
/// cargo's CACHEDIR.TAG; failing that, a dir inside OUT_DIR.
fn agent_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|target| target.join("agent"))
        .unwrap_or_else(|| out_dir.join("agent-target"))
}
