//! rum.toml edits measured against what the VM has: a record of the facts
//! rum.toml stated when each was applied (`applied.json`), the differences
//! with rum.toml now, and when each difference takes effect.

use crate::config::{Config, Script};
use crate::record::{self, Record, RecordError};
use crate::state::State;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// When an edit of one kind takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applies {
    /// Scripts and the checkpoint budget: the next provisioning uses them.
    Now,
    /// Port forwards, and mounts on a VM with spare PCIe ports: `rum
    /// reload`, and `rum up`/`rum retry` after each boot or restore.
    Live,
    /// Mounts of a VM made before rum fixed them: the next boot.
    NextBoot,
    /// What cloud-init or the base image gives the VM: `rum retry --reset`.
    Reset,
    /// Extra drives and their filesystems outlive `--reset`: a new VM.
    NewVm,
}

impl Applies {
    pub const ALL: [Applies; 5] = [
        Applies::Now,
        Applies::Live,
        Applies::NextBoot,
        Applies::Reset,
        Applies::NewVm,
    ];

    /// Whether the running VM (or the one a retry restores) gets it without
    /// the user doing anything more.
    pub fn is_applied_by_retry(self) -> bool {
        matches!(self, Applies::Now | Applies::Live)
    }

    fn text(self) -> &'static str {
        match self {
            Applies::Now => "now: the next provisioning uses it",
            Applies::Live => "live: `rum reload` applies it to the running VM",
            Applies::NextBoot => {
                "at the next boot (`rum down`, `rum up`), and snapshots taken before it no longer load: this VM was made before rum gave VMs spare PCIe ports; a new one takes mounts live"
            }
            Applies::Reset => {
                "at the next `rum retry --reset` (cloud-init and the base image run again)"
            }
            Applies::NewVm => "needs a new VM (`rum destroy`, then `rum up`)",
        }
    }
}

/// When a `[[mounts]]` edit applies on this VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The tags on the root bus, fixed when the VM was made (`None`: a VM
    /// made before rum fixed them, which takes rum.toml's at every boot).
    pub fixed: Option<Vec<String>>,
    /// Spare PCIe ports: other mounts are plugged in while it runs.
    pub live: bool,
}

impl Mounts {
    pub fn of(state: &State) -> Self {
        Self {
            fixed: state
                .shares
                .as_ref()
                .map(|shares| shares.iter().map(|s| s.tag.clone()).collect()),
            live: state.hotplug_ports > 0,
        }
    }

    fn kind(&self, tag: &str) -> Applies {
        match &self.fixed {
            None => Applies::NextBoot,
            Some(fixed) if fixed.iter().any(|t| t == tag) => Applies::Reset,
            Some(_) if self.live => Applies::Live,
            Some(_) => Applies::Reset,
        }
    }
}

/// What rum.toml stated, fact by fact, when each fact was applied to the
/// VM. A key names the setting (`[resources] cpus`, `[[ports]] 127.0.0.1:8080`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub facts: BTreeMap<String, Fact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub value: String,
    pub applies: Applies,
}

/// One difference between rum.toml and what the VM has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub key: String,
    /// `None`: rum.toml adds it.
    pub was: Option<String>,
    /// `None`: rum.toml no longer has it.
    pub now: Option<String>,
    pub applies: Applies,
}

impl Record for Applied {
    const RECOVERY: &'static str = "remove it: rum then takes the VM's settings as they are in rum.toml (edits since the last boot are taken as applied)";
}

impl Applied {
    /// Everything `config` states that an edit could change.
    pub fn of(config: &Config, mounts: &Mounts) -> Self {
        let mut facts = BTreeMap::new();
        let mut fact = |key: String, value: String, applies: Applies| {
            facts.insert(key, Fact { value, applies });
        };
        use Applies::*;
        let r = &config.resources;
        fact("[image] base".into(), config.image.base.to_string(), Reset);
        fact("[resources] cpus".into(), r.cpus.to_string(), Reset);
        fact(
            "[resources] memory_mb".into(),
            r.memory_mb.to_string(),
            Reset,
        );
        fact("[resources] disk".into(), r.disk.to_string(), Reset);
        fact(
            "[network] hostname".into(),
            config.network.hostname.clone(),
            Reset,
        );
        fact("[user] name".into(), config.user.name.clone(), Reset);
        fact("[user] groups".into(), config.user.groups.join(", "), Reset);
        let keys = &config.ssh.authorized_keys;
        fact(
            "[ssh] authorized_keys".into(),
            format!("{} key(s) {}", keys.len(), short_hash(&keys.join("\n"))),
            Reset,
        );
        let a = &config.advanced;
        fact("[advanced] machine".into(), a.machine.clone(), Reset);
        fact("[advanced] firmware".into(), json_text(&a.firmware), Reset);
        fact("[advanced] accel".into(), json_text(&a.accel), Reset);
        fact(
            "[advanced] agent_transport".into(),
            json_text(&a.agent_transport),
            Reset,
        );
        fact(
            "[advanced] checkpoints".into(),
            a.checkpoints.to_string(),
            Now,
        );
        // Stated only when not the default, so older records see no change.
        if a.autologin {
            fact("[advanced] autologin".into(), "true".into(), NextBoot);
        }
        if a.guest_ram != crate::config::GuestRam::Auto {
            fact(
                "[advanced] guest_ram".into(),
                json_text(&a.guest_ram),
                NewVm,
            );
        }
        for d in &config.drives {
            fact(
                format!("[drives.{}] size", d.name),
                d.size.to_string(),
                NewVm,
            );
        }
        for f in &config.filesystems {
            fact(
                format!("[[fs.{}]] {}", json_text(&f.kind), f.target),
                format!("on {}", f.drives.join(", ")),
                NewVm,
            );
        }
        for p in &config.ports {
            fact(
                format!("[[ports]] {}:{}", p.bind, p.host),
                format!("guest {}", p.guest),
                Live,
            );
        }
        for m in &config.mounts {
            let mode = if m.readonly { " (read-only)" } else { "" };
            fact(
                format!("[[mounts]] {}", m.target),
                format!("{}{mode}", m.source.display()),
                mounts.kind(&m.tag),
            );
        }
        for (phase, steps) in [
            ("system", &config.provision.system),
            ("boot", &config.provision.boot),
        ] {
            for (i, step) in steps.iter().enumerate() {
                let script = match &step.script {
                    Script::Inline(text) => format!("inline script {}", short_hash(text)),
                    Script::File(path) => format!("file {}", path.display()),
                };
                fact(
                    format!("[[provision.{phase}]] {}", step.name),
                    format!("step {}: {script}", i + 1),
                    Now,
                );
            }
        }
        Self { facts }
    }

    /// How `config` differs from what the VM has, in key order.
    pub fn changes(&self, config: &Config, mounts: &Mounts) -> Vec<Change> {
        let now = Self::of(config, mounts).facts;
        let mut out = Vec::new();
        for (key, was) in &self.facts {
            match now.get(key) {
                Some(is) if is.value == was.value => {}
                is => out.push(Change {
                    key: key.clone(),
                    was: Some(was.value.clone()),
                    now: is.map(|f| f.value.clone()),
                    applies: was.applies,
                }),
            }
        }
        for (key, is) in &now {
            if !self.facts.contains_key(key) {
                out.push(Change {
                    key: key.clone(),
                    was: None,
                    now: Some(is.value.clone()),
                    applies: is.applies,
                });
            }
        }
        out.sort_by(|a, b| (a.applies, &a.key).cmp(&(b.applies, &b.key)));
        out
    }

    /// Takes what `config` states for the facts of the kinds in `applied`
    /// (they now hold in the VM); the other facts stay as they were.
    pub fn update(&mut self, config: &Config, mounts: &Mounts, applied: &[Applies]) {
        self.facts.retain(|_, f| !applied.contains(&f.applies));
        self.facts.extend(
            Self::of(config, mounts)
                .facts
                .into_iter()
                .filter(|(_, f)| applied.contains(&f.applies)),
        );
    }

    /// The record, or `None` for a VM made before rum kept one.
    pub fn load(path: &Path) -> Result<Option<Self>, RecordError> {
        record::load(path)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        record::save(self, path)
    }
}

/// How `config` differs from the record at `path`; nothing for a VM made
/// before rum kept one (its next boot starts it).
pub fn changes(path: &Path, config: &Config, mounts: &Mounts) -> Result<Vec<Change>, RecordError> {
    Ok(Applied::load(path)?
        .map(|applied| applied.changes(config, mounts))
        .unwrap_or_default())
}

/// The block rum prints for `changes` (empty when there are none).
pub struct Report<'a>(pub &'a [Change]);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        writeln!(f, "rum.toml differs from what this VM has:")?;
        for kind in Applies::ALL {
            let changes: Vec<_> = self.0.iter().filter(|c| c.applies == kind).collect();
            if changes.is_empty() {
                continue;
            }
            writeln!(f, "  {}:", kind.text())?;
            for c in changes {
                match (&c.was, &c.now) {
                    (Some(was), Some(now)) => writeln!(f, "    {}: {was} → {now}", c.key)?,
                    (None, Some(now)) => writeln!(f, "    {} ({now}) added", c.key)?,
                    (Some(was), None) => writeln!(f, "    {} ({was}) removed", c.key)?,
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }
}

/// A unit enum's serde name, as rum.toml spells it.
fn json_text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
