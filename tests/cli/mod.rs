//! A throwaway home for running the real `rum` binary without a VM: its own
//! HOME and XDG dirs and a project directory with an image file and a folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let project = root.path().join("project");
        std::fs::create_dir_all(project.join("share")).unwrap();
        std::fs::write(project.join("img.qcow2"), b"").unwrap();
        for dir in ["home", "data", "cache", "config", "runtime"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        Self { root }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn project(&self) -> PathBuf {
        self.root.path().join("project")
    }

    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let file = self.project().join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    /// Runs rum in the project directory, with no terminal on stdin.
    pub fn rum(&self, args: &[&str]) -> Output {
        self.rum_in(&self.project(), args)
    }

    pub fn rum_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd, args).output().expect("run rum")
    }

    /// `rum ARGS` in `cwd` with the sandbox's environment, not yet started.
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let r = self.root.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rum"));
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", r.join("home"))
            .env("XDG_DATA_HOME", r.join("data"))
            .env("XDG_CACHE_HOME", r.join("cache"))
            .env("XDG_CONFIG_HOME", r.join("config"))
            .env("XDG_RUNTIME_DIR", r.join("runtime"))
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Every path under the sandbox with its size, to prove nothing changed.
    pub fn tree(&self) -> Vec<(PathBuf, u64)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.path());
            for entry in entries {
                let meta = entry.metadata().unwrap();
                out.push((entry.path(), if meta.is_dir() { 0 } else { meta.len() }));
                if meta.is_dir() {
                    walk(&entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), &mut out);
        out
    }
}
