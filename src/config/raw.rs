//! What rum.toml says, as written: serde types with no defaults applied and
//! nothing checked beyond TOML types. `validate` turns this into `Config`.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub name: Option<String>,
    pub image: Option<RawImage>,
    pub resources: Option<RawResources>,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub ports: Vec<RawPort>,
    #[serde(default)]
    pub mounts: Vec<RawMount>,
    #[serde(default)]
    pub drives: BTreeMap<String, RawDrive>,
    #[serde(default)]
    pub fs: RawFilesystems,
    #[serde(default)]
    pub provision: RawProvision,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub user: RawUser,
    #[serde(default)]
    pub advanced: RawAdvanced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub base: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk: Option<String>,
}

/// `nat`, `wait_for_ip`, `ip_wait_timeout_s` and `interfaces` are libvirt-era
/// keys: accepted so existing files load, reported as having no effect.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub hostname: Option<String>,
    pub nat: Option<bool>,
    pub wait_for_ip: Option<bool>,
    pub ip_wait_timeout_s: Option<u64>,
    pub interfaces: Option<Vec<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub host: Option<u16>,
    pub guest: Option<u16>,
    pub bind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    pub source: Option<String>,
    pub target: Option<String>,
    #[serde(default)]
    pub readonly: bool,
    pub tag: Option<String>,
    pub inotify: Option<bool>,
    pub default: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrive {
    pub size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilesystems {
    #[serde(default)]
    pub ext4: Vec<RawFs>,
    #[serde(default)]
    pub xfs: Vec<RawFs>,
    #[serde(default)]
    pub btrfs: Vec<RawFs>,
    #[serde(default)]
    pub zfs: Vec<RawFs>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFs {
    pub drive: Option<String>,
    pub drives: Option<Vec<String>>,
    pub target: Option<String>,
    pub mode: Option<String>,
    pub pool: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvision {
    pub system: Option<RawSteps>,
    pub boot: Option<RawSteps>,
}

/// `[provision.X]` (one step) or `[[provision.X]]` (steps in order).
#[derive(Debug)]
pub enum RawSteps {
    One(RawStep),
    Many(Vec<RawStep>),
}

impl RawSteps {
    /// The steps, and whether they were written as an array.
    pub fn into_steps(self) -> (Vec<RawStep>, bool) {
        match self {
            RawSteps::One(step) => (vec![step], false),
            RawSteps::Many(steps) => (steps, true),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: Option<String>,
    pub script: Option<String>,
    pub file: Option<String>,
    pub retries: Option<i64>,
    pub checkpoint: Option<bool>,
}

/// A table or an array of tables, each read as a `RawStep`, so that a
/// mistake inside a step keeps its own message ("unknown field", …).
impl<'de> Deserialize<'de> for RawSteps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Steps;
        impl<'de> serde::de::Visitor<'de> for Steps {
            type Value = RawSteps;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawSteps, A::Error> {
                RawStep::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawSteps::One)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawSteps, A::Error> {
                Vec::<RawStep>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawSteps::Many)
            }
        }
        deserializer.deserialize_any(Steps)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<String>,
    pub command: Option<String>,
    pub interface: Option<String>,
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdvanced {
    pub accel: Option<String>,
    pub machine: Option<String>,
    pub firmware: Option<String>,
    pub qemu: Option<String>,
    pub agent_transport: Option<String>,
    pub checkpoints: Option<i64>,
    pub guest_ram: Option<String>,
    pub libvirt_uri: Option<String>,
    pub domain_type: Option<String>,
    pub autologin: Option<bool>,
}
