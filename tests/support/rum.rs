//! Runs the real `rum` binary inside the test's environment.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::E2e;

/// Long enough for a `rum up` under TCG; a hung command fails instead of blocking CI.
const RUM_TIMEOUT: Duration = Duration::from_secs(600);

/// One finished `rum` invocation.
pub struct RumRun {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RumRun {
    /// Panics with the full output unless rum exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "{self}");
        self
    }

    /// Panics with the full output unless rum exited with `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.status.code(), Some(code), "{self}");
        self
    }
}

impl fmt::Display for RumRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rum {} exited {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

impl E2e {
    /// `rum` with a private HOME and XDG dirs, `RUM_ACCEL`, the project dir as
    /// working dir and no terminal on stdin; callers add arguments and stdio.
    pub fn rum_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rum"));
        // Nothing from the developer's shell (RUM_*, SSH_AUTH_SOCK, ~/.ssh) may change the run.
        cmd.env_clear();
        for keep in ["PATH", "RUM_LOG", "RUST_BACKTRACE"] {
            if let Some(value) = std::env::var_os(keep) {
                cmd.env(keep, value);
            }
        }
        cmd.current_dir(&self.project)
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", &self.xdg.data)
            .env("XDG_CACHE_HOME", &self.xdg.cache)
            .env("XDG_CONFIG_HOME", &self.xdg.config)
            .env("XDG_RUNTIME_DIR", &self.xdg.runtime)
            .env("RUM_ACCEL", &self.tools.accel)
            // HOME is private, so rum would not find a virtiofsd in ~/.cargo/bin.
            .env("RUM_VIRTIOFSD", &self.tools.virtiofsd)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `command` with `sh -c` as root in the guest (through `rum exec`);
    /// it must succeed. Returns its stdout.
    /// Runs `rum -o json ARGS`, which must succeed, and returns its result's data.
    pub fn rum_data(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let run = self.rum(&all);
        run.assert_success();
        let last = run.stdout.lines().last().expect("a result line");
        serde_json::from_str::<serde_json::Value>(last).unwrap()["data"].clone()
    }

    /// `rum_data`, run in `dir` (another project) instead of the project dir.
    pub fn rum_data_in(&self, dir: &Path, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let run = self.rum_in(dir, &all);
        run.assert_success();
        let last = run.stdout.lines().last().expect("a result line");
        serde_json::from_str::<serde_json::Value>(last).unwrap()["data"].clone()
    }

    pub fn guest_sh(&self, command: &str) -> String {
        let run = self.rum(&["exec", "--user", "root", "--", "sh", "-c", command]);
        run.assert_success();
        run.stdout
    }

    /// Runs `rum ARGS` to completion (at most 10 minutes) and returns its output.
    pub fn rum(&self, args: &[&str]) -> RumRun {
        self.rum_with_timeout(args, RUM_TIMEOUT)
    }

    /// `rum ARGS` as `rum` runs it, but with `dir` (another project) as working dir.
    pub fn rum_in(&self, dir: &Path, args: &[&str]) -> RumRun {
        self.run_rum_with(Some(dir), &[], &[], args, RUM_TIMEOUT)
    }

    /// `rum ARGS` with extra environment variables (they win over the defaults).
    pub fn rum_env(&self, vars: &[(&str, &str)], args: &[&str]) -> RumRun {
        self.run_rum(vars, args, RUM_TIMEOUT)
    }

    pub fn rum_with_timeout(&self, args: &[&str], timeout: Duration) -> RumRun {
        self.run_rum(&[], args, timeout)
    }

    /// `rum ARGS` without the variables `unset` (e.g. `RUM_ACCEL`, to let rum
    /// pick the accelerator), with `vars` set.
    pub fn rum_unset(&self, unset: &[&str], vars: &[(&str, &str)], args: &[&str]) -> RumRun {
        self.run_rum_with(None, unset, vars, args, RUM_TIMEOUT)
    }

    fn run_rum(&self, vars: &[(&str, &str)], args: &[&str], timeout: Duration) -> RumRun {
        self.run_rum_with(None, &[], vars, args, timeout)
    }

    /// `dir`: the working dir instead of the project dir.
    fn run_rum_with(
        &self,
        dir: Option<&Path>,
        unset: &[&str],
        vars: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> RumRun {
        // Files, not pipes: no deadlock on large output, and they are dumped if the test fails.
        let runs = self.dir("rum-runs");
        let n = fs::read_dir(&runs).map(|d| d.count() / 2 + 1).unwrap_or(1);
        let stdout_path = runs.join(format!("{n:03}-stdout.log"));
        let stderr_path = runs.join(format!("{n:03}-stderr.log"));
        let mut cmd = self.rum_command();
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        for name in unset {
            cmd.env_remove(name);
        }
        cmd.envs(vars.iter().copied())
            .args(args)
            .stdout(create(&stdout_path))
            .stderr(create(&stderr_path));
        let pid = self.procs.spawn(&mut cmd);
        let status = match self.procs.wait_timeout(pid, timeout) {
            Some(status) => status,
            None => {
                self.procs.stop(pid);
                panic!(
                    "rum {} did not finish within {timeout:?}\n--- stdout ---\n{}--- stderr ---\n{}",
                    args.join(" "),
                    read(&stdout_path),
                    read(&stderr_path)
                );
            }
        };
        self.procs.stop(pid);
        RumRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            status,
            stdout: read(&stdout_path),
            stderr: read(&stderr_path),
        }
    }

    /// Writes `<project>/rum.toml` using the test image, 1 CPU and 1 GiB,
    /// followed by `extra` (more TOML sections); returns its path. One vCPU:
    /// two TCG guests with two each on two host cores booted in 1.45x the
    /// time (vCPUs preempted while others wait on them); bake's second VM
    /// and url_base keep two, so SMP guests stay covered.
    pub fn write_rum_toml(&self, extra: &str) -> PathBuf {
        let path = self.project.join("rum.toml");
        let image = self.tools.image.to_str().expect("test image path is UTF-8");
        let text = format!(
            "[image]\nbase = {}\n\n[resources]\ncpus = 1\nmemory_mb = 1024\n\n{extra}",
            toml_string(image)
        );
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn create(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

fn read(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
