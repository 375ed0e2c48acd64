//! `rum seed dump DIR`: the seed's files, for reading what cloud-init gets.

use crate::config;
use crate::identity::GuestIdentity;
use crate::instance::{BaseDirs, InstanceId, InstancePaths, LockWait};
use crate::output::Reporter;
use crate::{Error, Exit, agent_binary, seed};
use std::path::Path;

pub fn run(file: &Path, dir: &Path, reporter: &Reporter) -> Result<Exit, Error> {
    let loaded = config::load(file)?;
    let config = &loaded.config;
    let paths = InstancePaths::resolve(
        InstanceId::new(&config.name, &config.file),
        &BaseDirs::from_env()?,
    )?;
    let fresh = !paths.exists();
    paths.ensure_data_dir()?;
    // The identity is created here exactly as `rum up` would create it, and kept.
    let _lock = paths.lock("rum seed dump", LockWait::No)?;
    let guest = GuestIdentity::ensure(&paths)?;
    if fresh {
        reporter.note(&format!(
            "Created the SSH keys and instance-id of `{}` in {}",
            paths.id,
            paths.data.display()
        ));
    }
    let args = seed::args(config, &guest, agent_binary::BYTES);
    let (identity, files) = seed::dump(&args, dir)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    reporter.result(
        &format!("Seed {identity}\n{}", names.join("\n")),
        &serde_json::json!({ "identity": identity, "files": files }),
    );
    Ok(Exit::Success)
}
