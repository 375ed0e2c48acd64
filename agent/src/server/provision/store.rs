//! Provisioning's on-disk store under the state root: the script cache
//! (manifest and script files), the system-provisioned sentinel, the
//! results of the last runs, the boot-id marker, and the run logs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rum_agent::protocol::{RunOn, RunRecord, Script, Trigger};
use serde::{Deserialize, Serialize};

use crate::server::log;

/// Logs kept per trigger.
const KEEP_LOGS: usize = 20;

/// The state root, and every file provisioning keeps there.
pub struct ProvisionStore {
    root: PathBuf,
}

/// The cached scripts, in run order (`scripts/manifest.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub scripts: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub order: i64,
    pub run_on: RunOn,
    /// File name under `scripts/`.
    pub file: String,
}

/// The last run of each kind (`results.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub last_provision: Option<RunRecord>,
    pub last_boot_run: Option<RunRecord>,
}

impl ProvisionStore {
    /// Creates the root and its directories if need be.
    pub fn open(root: &Path) -> io::Result<ProvisionStore> {
        for dir in [root.to_path_buf(), root.join("scripts"), root.join("logs")] {
            fs::create_dir_all(&dir)?;
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
        Ok(ProvisionStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `.system-provisioned`: written once every system script succeeded.
    pub fn sentinel(&self) -> PathBuf {
        self.root.join(".system-provisioned")
    }

    pub fn system_provisioned(&self) -> bool {
        self.sentinel().exists()
    }

    pub fn write_sentinel(&self, now_ms: i64, boot_id: &str) -> io::Result<()> {
        let content = format!("{now_ms} {boot_id}\n");
        write_atomic(&self.sentinel(), content.as_bytes(), 0o644)
    }

    /// System provisioning is being redone (steps added or run again).
    pub fn remove_sentinel(&self) -> io::Result<()> {
        match fs::remove_file(self.sentinel()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn scripts_dir(&self) -> PathBuf {
        self.root.join("scripts")
    }

    /// Where a cached script's content is.
    pub fn script_path(&self, entry: &ManifestEntry) -> PathBuf {
        self.scripts_dir().join(&entry.file)
    }

    /// The cached manifest; empty when there is none (or it is unreadable).
    pub fn manifest(&self) -> Manifest {
        fs::read(self.scripts_dir().join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn results(&self) -> Results {
        fs::read(self.root.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Keeps `record` as the last run of its trigger.
    pub fn record(&self, record: RunRecord) -> io::Result<()> {
        let mut results = self.results();
        match record.trigger {
            Trigger::Host => results.last_provision = Some(record),
            Trigger::Boot => results.last_boot_run = Some(record),
        }
        let json = serde_json::to_vec_pretty(&results).expect("results serialize");
        write_atomic(&self.root.join("results.json"), &json, 0o644)
    }

    /// The boot id whose boot scripts have run (`boot-scripts-ran`).
    pub fn boot_scripts_ran_for(&self) -> Option<String> {
        fs::read_to_string(self.root.join("boot-scripts-ran"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub fn mark_boot_scripts_ran(&self, boot_id: &str) -> io::Result<()> {
        write_atomic(
            &self.root.join("boot-scripts-ran"),
            boot_id.as_bytes(),
            0o644,
        )
    }

    /// Caches the scripts of a provisioning call (already in run order).
    ///
    /// The host provisions in two calls: the system phase (system scripts
    /// only, or everything), then the boot phase (boot scripts only; `rum
    /// retry --from boot` sends only that one). A call that carries a system
    /// script replaces the whole cache. A call without one replaces the
    /// cached boot scripts and keeps the cached system scripts: they still
    /// show in `status`, and they still hold the boot scripts back at boot
    /// until system provisioning has completed.
    pub fn cache(&self, scripts: &[Script]) -> io::Result<()> {
        let mut all = if scripts.iter().any(|s| s.run_on == RunOn::System) {
            Vec::new()
        } else {
            self.cached_scripts(&self.manifest(), RunOn::System)?
        };
        all.extend(scripts.iter().cloned());
        // Stable: the kept system scripts stay ahead of boot scripts of the same order.
        all.sort_by_key(|s| s.order);
        // Every content is in memory before a file is written: an index may
        // now name another script's file.
        let dir = self.scripts_dir();
        let mut manifest = Manifest::default();
        for (i, s) in all.iter().enumerate() {
            let file = format!("{i:03}-{}.sh", sanitize(&s.name));
            write_atomic(&dir.join(&file), s.content.as_bytes(), 0o700)?;
            manifest.scripts.push(ManifestEntry {
                name: s.name.clone(),
                order: s.order,
                run_on: s.run_on,
                file,
            });
        }
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        write_atomic(&dir.join("manifest.json"), &json, 0o644)?;
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != "manifest.json" && !manifest.scripts.iter().any(|s| s.file == name) {
                let _ = fs::remove_file(dir.join(name));
            }
        }
        Ok(())
    }

    /// The cached scripts that run on `run_on`, in run order.
    pub fn cached_scripts(&self, manifest: &Manifest, run_on: RunOn) -> io::Result<Vec<Script>> {
        manifest
            .scripts
            .iter()
            .filter(|e| e.run_on == run_on)
            .map(|e| {
                Ok(Script {
                    name: e.name.clone(),
                    content: fs::read_to_string(self.script_path(e))?,
                    order: e.order,
                    run_on: e.run_on,
                })
            })
            .collect()
    }

    /// A new log for a run of `kind` (`host`, `boot`) started at `started_ms`.
    pub fn create_log(&self, kind: &str, started_ms: i64) -> (PathBuf, LogFile) {
        let path = self
            .root
            .join("logs")
            .join(format!("{kind}-{started_ms}.log"));
        let file = LogFile::create(&path);
        (path, file)
    }

    /// Keeps the newest [`KEEP_LOGS`] logs of `kind`.
    pub fn prune_logs(&self, kind: &str) {
        let dir = self.root.join("logs");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let prefix = format!("{kind}-");
        let mut logs: Vec<(i64, PathBuf)> = entries
            .filter_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?;
                let ms = name
                    .strip_prefix(&prefix)?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((ms, path))
            })
            .collect();
        logs.sort();
        let excess = logs.len().saturating_sub(KEEP_LOGS);
        for (_, path) in logs.into_iter().take(excess) {
            let _ = fs::remove_file(path);
        }
    }
}

/// A run's log; write errors are reported once and otherwise ignored.
pub struct LogFile {
    file: Option<fs::File>,
}

impl LogFile {
    fn create(path: &Path) -> LogFile {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path);
        LogFile {
            file: match file {
                Ok(f) => Some(f),
                Err(e) => {
                    log!("cannot write {}: {e}", path.display());
                    None
                }
            },
        }
    }

    pub fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file
            && f.write_all(data).is_err()
        {
            self.file = None;
        }
    }

    pub fn line(&mut self, text: &str) {
        self.write(format!("{text}\n").as_bytes());
    }
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("rum-tmp");
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A file-name-safe version of a script name.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "script".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_file_names() {
        assert_eq!(sanitize("drives & fs/0"), "drives___fs_0");
        assert_eq!(sanitize(""), "script");
    }

    fn script(name: &str, order: i64, run_on: RunOn) -> Script {
        Script {
            name: name.into(),
            content: format!("echo {name}"),
            order,
            run_on,
        }
    }

    /// (name, run_on, content) of what the store has cached.
    fn cached(store: &ProvisionStore) -> Vec<(String, RunOn, String)> {
        store
            .manifest()
            .scripts
            .iter()
            .map(|e| {
                let content = fs::read_to_string(store.script_path(e)).unwrap();
                (e.name.clone(), e.run_on, content)
            })
            .collect()
    }

    fn expect(list: &[(&str, RunOn)]) -> Vec<(String, RunOn, String)> {
        list.iter()
            .map(|(n, r)| (n.to_string(), *r, format!("echo {n}")))
            .collect()
    }

    #[test]
    fn a_call_without_system_scripts_keeps_the_cached_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProvisionStore::open(dir.path()).unwrap();
        let everything = [
            script("drives", 0, RunOn::System),
            script("system", 100, RunOn::System),
            script("old-boot", 200, RunOn::Boot),
        ];
        store.cache(&everything).unwrap();

        // The boot phase: the system scripts stay, the boot scripts are replaced.
        let boot = [
            script("boot-a", 200, RunOn::Boot),
            script("boot-b", 300, RunOn::Boot),
        ];
        store.cache(&boot).unwrap();
        let want = expect(&[
            ("drives", RunOn::System),
            ("system", RunOn::System),
            ("boot-a", RunOn::Boot),
            ("boot-b", RunOn::Boot),
        ]);
        assert_eq!(cached(&store), want);
        // Again (retry --from boot): the same cache, no stray files.
        store.cache(&boot).unwrap();
        assert_eq!(cached(&store), want);
        let files = fs::read_dir(dir.path().join("scripts")).unwrap().count();
        assert_eq!(files, want.len() + 1, "scripts plus the manifest");
        let boot_scripts = store
            .cached_scripts(&store.manifest(), RunOn::Boot)
            .unwrap();
        assert_eq!(boot_scripts, boot);

        // A call with system scripts is a new provisioning: it replaces everything.
        store.cache(&[script("other", 100, RunOn::System)]).unwrap();
        assert_eq!(cached(&store), expect(&[("other", RunOn::System)]));
    }

    #[test]
    fn kept_system_scripts_stay_in_run_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProvisionStore::open(dir.path()).unwrap();
        store
            .cache(&[
                script("early", 0, RunOn::System),
                script("late", 500, RunOn::System),
            ])
            .unwrap();
        store
            .cache(&[
                script("first", -5, RunOn::Boot),
                script("middle", 200, RunOn::Boot),
            ])
            .unwrap();
        assert_eq!(
            cached(&store),
            expect(&[
                ("first", RunOn::Boot),
                ("early", RunOn::System),
                ("middle", RunOn::Boot),
                ("late", RunOn::System),
            ])
        );
    }
}
