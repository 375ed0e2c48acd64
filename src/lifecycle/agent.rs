//! Reaching the guest agent of a running VM.

use super::error::AgentError;
use super::{Instance, RuntimeInfo};
use rum_agent::{Client, ConnectOptions, Endpoint};
use std::time::Duration;

/// Where the agent of a VM started with `info` listens.
pub fn endpoint(instance: &Instance, info: &RuntimeInfo) -> Endpoint {
    match info.vsock_cid {
        Some(cid) => Endpoint::Vsock { cid },
        None => Endpoint::Serial(instance.paths.agent_socket()),
    }
}

/// A session with the agent of the running VM.
pub async fn connect_agent(instance: &Instance, timeout: Duration) -> Result<Client, AgentError> {
    let name = instance.paths.id.to_string();
    let Some(info) = instance.running()? else {
        return Err(AgentError::NotRunning(name));
    };
    let options = ConnectOptions {
        retry: Duration::from_millis(500),
        timeout,
    };
    match Client::connect(&endpoint(instance, &info), &options).await {
        Ok(client) => Ok(client),
        Err(source) => {
            Err(super::disk_full::explain(instance)
                .await
                .unwrap_or(AgentError::Unreachable {
                    instance: name,
                    source,
                }))
        }
    }
}
