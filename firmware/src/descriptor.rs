//! The firmware descriptor format of QEMU's docs/interop/firmware.json (the
//! parts rum reads; unknown fields are ignored, as the schema evolves).

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "interface-types")]
    pub interface_types: Vec<String>,
    pub mapping: Mapping,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "device", rename_all = "kebab-case")]
pub enum Mapping {
    Flash(FlashMapping),
    Memory { filename: PathBuf },
    Kernel { filename: PathBuf },
}

#[derive(Debug, Clone, Deserialize)]
pub struct FlashMapping {
    #[serde(default = "split")]
    pub mode: String,
    pub executable: FlashFile,
    #[serde(rename = "nvram-template")]
    pub nvram_template: Option<FlashFile>,
}

fn split() -> String {
    "split".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FlashFile {
    pub filename: PathBuf,
    pub format: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    pub architecture: String,
    pub machines: Vec<String>,
}

impl Descriptor {
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    pub fn supports(&self, architecture: &str, machine: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t.architecture == architecture && t.machines.iter().any(|m| glob(m, machine)))
    }
}

/// Shell-style matching with `*` and `?`, as descriptors use for machine types.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("pc-q35-*", "pc-q35-10.0"));
        assert!(glob("pc-i440fx-?.?", "pc-i440fx-9.2"));
        assert!(!glob("pc-q35-*", "pc-i440fx-10.0"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b", "aXXc"));
    }
}
