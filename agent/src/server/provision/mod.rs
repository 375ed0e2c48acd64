//! Provisioning: ordered `sh -c` scripts, the system-provisioned sentinel,
//! the script cache, logs, and the boot run.
//!
//! The state root (default `/var/lib/rum`):
//!
//! ```text
//! .system-provisioned   written once every system script has succeeded
//! scripts/manifest.json the last provisioned list, in run order
//! scripts/NNN-name.sh   each script's content
//! logs/host-<ms>.log    one log per run (host = a provision call,
//! logs/boot-<ms>.log      boot = the agent's own run at boot)
//! results.json          the last run of each kind
//! boot-scripts-ran      the boot id whose boot scripts have run
//! ```
//!
//! At start the agent runs the cached boot scripts once per boot (unless a
//! run already covered this boot), with or without a host — provided
//! system provisioning completed (or there are no system scripts).
//!
//! [`store`] owns those files; [`engine`] runs the scripts.

mod engine;
mod store;

use rum_agent::protocol::{CachedScript, Event, Status};

pub use engine::{Runs, boot_run, host_run};
pub use store::ProvisionStore;

use super::Agent;

/// Provisioning state for the `status` call.
pub fn status(agent: &Agent) -> Event {
    let store = &agent.store;
    let manifest = store.manifest();
    let results = store.results();
    Event::Status(Box::new(Status {
        agent: agent.version.clone(),
        state_dir: store.root().display().to_string(),
        system_provisioned: store.system_provisioned(),
        scripts: manifest
            .scripts
            .into_iter()
            .map(|e| CachedScript {
                path: store.script_path(&e).display().to_string(),
                name: e.name,
                order: e.order,
                run_on: e.run_on,
            })
            .collect(),
        running: agent.runs.running(),
        boot_scripts_ran_for: store.boot_scripts_ran_for(),
        last_provision: results.last_provision,
        last_boot_run: results.last_boot_run,
    }))
}
