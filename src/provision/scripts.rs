//! The ordered script list: the generated filesystems script (order 0), then
//! the steps of `[provision.system]` (from 100) and `[provision.boot]` (from 200). Script files are
//! read again every time, so `rum retry` runs what is on disk now.

use super::fs_script::fs_script;
use crate::config::{Config, Script as ConfigScript};
use rum_agent::protocol::{RunOn, Script};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("Cannot read {} for the provisioning step `{step}`; restore the file or change the step's `file` in rum.toml; no step has run", .path.display())]
    Read {
        step: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where each phase's steps start in the run order; a phase holds at most
/// `config::MAX_STEPS` steps, so the two never meet.
const SYSTEM_ORDER: i64 = 100;
const BOOT_ORDER: i64 = 200;

pub fn scripts(config: &Config) -> Result<Vec<Script>, ScriptError> {
    let mut out = Vec::new();
    if let Some(content) = fs_script(&config.drives, &config.filesystems) {
        out.push(Script {
            name: "filesystems".into(),
            content,
            order: 0,
            run_on: RunOn::System,
        });
    }
    for (first, run_on, steps) in [
        (SYSTEM_ORDER, RunOn::System, &config.provision.system),
        (BOOT_ORDER, RunOn::Boot, &config.provision.boot),
    ] {
        for (i, step) in steps.iter().enumerate() {
            let content = match &step.script {
                ConfigScript::Inline(text) => text.clone(),
                ConfigScript::File(path) => {
                    std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
                        step: step.name.clone(),
                        path: path.clone(),
                        source,
                    })?
                }
            };
            out.push(Script {
                name: step.name.clone(),
                content,
                order: first + i as i64,
                run_on,
            });
        }
    }
    Ok(out)
}

/// Identifies the system scripts (names and contents): a `post-system`
/// checkpoint is only good for the scripts it was taken after.
pub fn system_hash(scripts: &[Script]) -> String {
    let mut hash = Sha256::new();
    for s in scripts.iter().filter(|s| s.run_on == RunOn::System) {
        for field in [s.name.as_bytes(), s.content.as_bytes()] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field);
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str, dir: &std::path::Path) -> Config {
        crate::config::parse_str(text, &dir.join("rum.toml"))
            .unwrap()
            .config
    }

    #[test]
    fn orders_phases_and_reads_files_each_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("img.qcow2"), "").unwrap();
        std::fs::write(dir.path().join("boot.sh"), "echo one").unwrap();
        let c = config(
            "[image]\nbase = \"img.qcow2\"\n[provision.system]\nscript = \"apt-get update\"\n[provision.boot]\nfile = \"boot.sh\"\n",
            dir.path(),
        );
        let list = scripts(&c).unwrap();
        let summary: Vec<_> = list
            .iter()
            .map(|s| (s.name.as_str(), s.order, s.run_on))
            .collect();
        assert_eq!(
            summary,
            [
                ("system-1", 100, RunOn::System),
                ("boot-1", 200, RunOn::Boot)
            ]
        );
        assert_eq!(list[1].content, "echo one");
        std::fs::write(dir.path().join("boot.sh"), "echo two").unwrap();
        assert_eq!(scripts(&c).unwrap()[1].content, "echo two");
        std::fs::remove_file(dir.path().join("boot.sh")).unwrap();
        assert!(scripts(&c).unwrap_err().to_string().contains("boot.sh"));
    }

    #[test]
    fn steps_run_in_the_order_written_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("img.qcow2"), "").unwrap();
        let c = config(
            "[image]\nbase = \"img.qcow2\"\n[[provision.system]]\nname = \"packages\"\nscript = \"a\"\n[[provision.system]]\nscript = \"b\"\n[[provision.system]]\nname = \"app\"\nscript = \"c\"\n[[provision.boot]]\nscript = \"d\"\n[[provision.boot]]\nscript = \"e\"\n",
            dir.path(),
        );
        let summary: Vec<_> = scripts(&c)
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.order, s.run_on, s.content))
            .collect();
        let row = |n: &str, o, r, c: &str| (n.to_owned(), o, r, c.to_owned());
        assert_eq!(
            summary,
            [
                row("packages", 100, RunOn::System, "a"),
                row("system-2", 101, RunOn::System, "b"),
                row("app", 102, RunOn::System, "c"),
                row("boot-1", 200, RunOn::Boot, "d"),
                row("boot-2", 201, RunOn::Boot, "e"),
            ]
        );
    }

    #[test]
    fn system_hash_ignores_boot_scripts() {
        let s = |name: &str, content: &str, run_on| Script {
            name: name.into(),
            content: content.into(),
            order: 0,
            run_on,
        };
        let a = [s("system", "x", RunOn::System), s("boot", "1", RunOn::Boot)];
        let b = [s("system", "x", RunOn::System), s("boot", "2", RunOn::Boot)];
        let c = [s("system", "y", RunOn::System)];
        assert_eq!(system_hash(&a), system_hash(&b));
        assert_ne!(system_hash(&a), system_hash(&c));
    }
}
