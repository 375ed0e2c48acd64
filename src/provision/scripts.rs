//! The ordered script list: the generated filesystems script (order 0), then
//! `[provision.system]` (100) and `[provision.boot]` (200). Script files are
//! read again every time, so `rum retry` runs what is on disk now.

use super::fs_script::fs_script;
use crate::config::{Config, Script as ConfigScript};
use rum_agent::protocol::{RunOn, Script};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("Cannot read the provisioning script {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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
    for (name, order, run_on, script) in [
        ("system", 100, RunOn::System, &config.provision.system),
        ("boot", 200, RunOn::Boot, &config.provision.boot),
    ] {
        let Some(script) = script else { continue };
        let content = match script {
            ConfigScript::Inline(text) => text.clone(),
            ConfigScript::File(path) => {
                std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
                    path: path.clone(),
                    source,
                })?
            }
        };
        out.push(Script {
            name: name.into(),
            content,
            order,
            run_on,
        });
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
            [("system", 100, RunOn::System), ("boot", 200, RunOn::Boot)]
        );
        assert_eq!(list[1].content, "echo one");
        std::fs::write(dir.path().join("boot.sh"), "echo two").unwrap();
        assert_eq!(scripts(&c).unwrap()[1].content, "echo two");
        std::fs::remove_file(dir.path().join("boot.sh")).unwrap();
        assert!(scripts(&c).unwrap_err().to_string().contains("boot.sh"));
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
