//! `rum config check`: validate rum.toml and print what rum will use.

use crate::config::{self, Config, Script};
use crate::instance::{BaseDirs, InstanceId, InstancePaths};
use crate::output::Reporter;
use crate::{Error, Exit};
use serde_json::json;
use std::fmt::Write;
use std::path::Path;

pub fn run(file: &Path, reporter: &Reporter) -> Result<Exit, Error> {
    let loaded = config::load(file)?;
    for warning in &loaded.warnings {
        reporter.warn(&format!("`{}` {}", warning.path, warning.message));
    }
    let config = &loaded.config;
    let id = InstanceId::new(&config.name, &config.file);
    let paths = InstancePaths::resolve(id, &BaseDirs::from_env()?)?;
    let warnings: Vec<_> = loaded
        .warnings
        .iter()
        .map(|w| json!({"key": w.path.to_string(), "message": w.message}))
        .collect();
    // For an existing VM: how rum.toml differs from what it has.
    let mounts = crate::state::State::load(&paths.state_file())
        .map(|state| crate::drift::Mounts::of(&state))
        .unwrap_or_default();
    let changes = crate::drift::changes(&paths.applied(), config, &mounts)?;
    let mut text = summary(config, &paths);
    text += &crate::drift::Report(&changes).to_string();
    reporter.result(
        &text,
        &json!({
            "file": config.file,
            "instance": paths.id,
            "data_dir": paths.data,
            "runtime_dir": paths.runtime,
            "config": config,
            "warnings": warnings,
            "changes": changes,
        }),
    );
    Ok(Exit::Success)
}

fn summary(c: &Config, paths: &InstancePaths) -> String {
    let mut s = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(s, "  {label:<12}{value}");
    };
    row("config", format!("{} (valid)", c.file.display()));
    row(
        "instance",
        format!("{} in {}", paths.id, paths.data.display()),
    );
    row("image", c.image.base.to_string());
    row(
        "resources",
        format!(
            "{} CPUs, {} MiB memory, {} disk",
            c.resources.cpus, c.resources.memory_mb, c.resources.disk
        ),
    );
    row("hostname", c.network.hostname.clone());
    for p in &c.ports {
        row("port", format!("{}:{} → guest {}", p.bind, p.host, p.guest));
    }
    for m in &c.mounts {
        let mode = if m.readonly {
            "read-only"
        } else {
            "read-write"
        };
        row(
            "mount",
            format!(
                "{} → {} ({mode}, tag {})",
                m.source.display(),
                m.target,
                m.tag
            ),
        );
    }
    for d in &c.drives {
        row("drive", format!("{} {}", d.name, d.size));
    }
    for f in &c.filesystems {
        row(
            "filesystem",
            format!(
                "{} on {} at {}",
                f.kind.as_str(),
                f.drives.join(", "),
                f.target
            ),
        );
    }
    for (phase, steps) in [("system", &c.provision.system), ("boot", &c.provision.boot)] {
        for step in steps {
            let what = match &step.script {
                Script::Inline(text) => format!("inline, {} lines", text.lines().count()),
                Script::File(path) => path.display().to_string(),
            };
            row("provision", format!("{phase} {}: {what}", step.name));
        }
    }
    let groups = if c.user.groups.is_empty() {
        String::new()
    } else {
        format!(" (groups: {})", c.user.groups.join(", "))
    };
    row(
        "user",
        format!(
            "{}{groups}; ssh as {}, {} extra keys",
            c.user.name,
            c.ssh.user,
            c.ssh.authorized_keys.len()
        ),
    );
    let a = &c.advanced;
    row(
        "advanced",
        format!(
            "accel {}, machine {}, firmware {}, agent {}{}",
            a.accel.as_str(),
            a.machine,
            a.firmware.as_str(),
            a.agent_transport.as_str(),
            a.qemu
                .as_ref()
                .map(|q| format!(", qemu {}", q.display()))
                .unwrap_or_default()
        ),
    );
    s.trim_end().to_owned()
}
