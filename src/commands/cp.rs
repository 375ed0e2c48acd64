//! `rum cp SRC DST`: copies a file through the agent; `:path` is a guest path.

use crate::lifecycle::agent::connect_agent;
use crate::lifecycle::{Instance, runtime};
use crate::output::Reporter;
use crate::{Error, Exit};
use rum_agent::PushOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn run(
    target: &crate::lifecycle::Target,
    source: &str,
    destination: &str,
    reporter: &Reporter,
) -> Result<Exit, Error> {
    let (from_guest, to_guest) = (source.strip_prefix(':'), destination.strip_prefix(':'));
    let instance = Instance::open_target(target)?;
    let user = instance.config.user.name.clone();
    let (size, what) = runtime().block_on(async {
        match (from_guest, to_guest) {
            (None, Some(guest)) => {
                let client = connect_agent(&instance, Duration::from_secs(30)).await?;
                let local = PathBuf::from(source);
                let target = guest_target(guest, &local);
                let options = PushOptions {
                    mode: None,
                    owner: Some(user),
                    create_dirs: false,
                };
                let done = client.push_file(&local, &target, &options).await?;
                Ok::<_, Error>((done.size, format!("{} → :{target}", local.display())))
            }
            (Some(guest), None) => {
                let client = connect_agent(&instance, Duration::from_secs(30)).await?;
                let mut local = PathBuf::from(destination);
                if local.is_dir() {
                    local = local.join(Path::new(guest).file_name().unwrap_or_default());
                }
                let info = client.pull_file(guest, &local).await?;
                Ok((info.size, format!(":{guest} → {}", local.display())))
            }
            (None, None) => Err(Error::CpNoGuestSide(source.into(), destination.into())),
            (Some(_), Some(_)) => Err(Error::CpTwoGuestSides(source.into(), destination.into())),
        }
    })?;
    reporter.result(
        &format!("Copied {size} bytes: {what}"),
        &serde_json::json!({ "bytes": size, "copy": what }),
    );
    Ok(Exit::Success)
}

/// A guest path ending in `/` names a directory: the file keeps its name.
fn guest_target(guest: &str, local: &Path) -> String {
    if guest.ends_with('/') {
        format!(
            "{guest}{}",
            local
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )
    } else {
        guest.to_owned()
    }
}
