//! Provisioning: the ordered script list built from rum.toml and run by the
//! guest agent.

pub mod fs_script;
pub mod run;
pub mod scripts;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Script(#[from] scripts::ScriptError),
    #[error(transparent)]
    Agent(#[from] rum_agent::Error),
}

impl ProvisionError {
    /// Nothing here is the user's command line or config.
    pub fn is_usage(&self) -> bool {
        false
    }
}
