//! QMP jobs run to completion, and the snapshot jobs rum uses.

use crate::{Qmp, QmpError};
use qapi::qmp::{self, Event, JobStatus};
use std::time::Duration;
use tokio::time::Instant;

/// How often job status is polled when no status event arrives.
const POLL: Duration = Duration::from_millis(200);
/// The ids of the jobs rum starts; any other job is somebody else's.
const PREFIX: &str = "rum-";

impl Qmp {
    /// Starts a job with `command` (whose `job-id` is `id`), waits until it
    /// concludes, dismisses it and returns its error text as `QmpError::Job`.
    pub async fn run_job<C>(&self, command: C, id: &str, timeout: Duration) -> Result<(), QmpError>
    where
        C: qmp::QmpCommand,
    {
        let deadline = Instant::now() + timeout;
        self.settle_leftovers(deadline).await?;
        // Listening before the job starts: its end is seen from its event,
        // with no query before it.
        let events = self.events();
        self.execute(command).await?;
        if let Some(hook) = self.job_started {
            hook(id);
        }
        self.wait_and_dismiss(id, deadline, <C as qapi::Command>::NAME, Some(events))
            .await
    }

    /// Waits for and dismisses the jobs a killed rum left behind: QEMU keeps
    /// running a snapshot job whose client died, and keeps it, concluded,
    /// until dismissed, so a second job with its id would be refused.
    async fn settle_leftovers(&self, deadline: Instant) -> Result<(), QmpError> {
        let jobs = self.execute(qmp::query_jobs {}).await?;
        for job in jobs.into_iter().filter(|j| j.id.starts_with(PREFIX)) {
            // Its outcome was for the rum that died; this one starts afresh.
            let _ = self
                .wait_and_dismiss(&job.id, deadline, "a leftover job", None)
                .await;
        }
        Ok(())
    }

    /// With `since`, events received from before the job started: the
    /// first query waits for its status to change to concluded.
    async fn wait_and_dismiss(
        &self,
        id: &str,
        deadline: Instant,
        name: &'static str,
        since: Option<tokio::sync::broadcast::Receiver<Event>>,
    ) -> Result<(), QmpError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let mut events = match since {
            Some(mut events) => {
                tokio::select! {
                    _ = wait_for_status_change(&mut events, id, Some(JobStatus::concluded)) => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(QmpError::Timeout { command: name, timeout });
                    }
                }
                events
            }
            None => self.events(),
        };
        loop {
            let jobs = self.execute(qmp::query_jobs {}).await?;
            let Some(job) = jobs.into_iter().find(|j| j.id == id) else {
                return Err(QmpError::JobVanished { id: id.to_owned() });
            };
            if job.status == JobStatus::concluded {
                self.execute(qmp::job_dismiss { id: id.to_owned() }).await?;
                return match job.error {
                    Some(message) => Err(QmpError::Job {
                        id: id.to_owned(),
                        message,
                    }),
                    None => Ok(()),
                };
            }
            tokio::select! {
                _ = wait_for_status_change(&mut events, id, None) => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(QmpError::Timeout { command: name, timeout });
                }
            }
        }
    }

    /// `snapshot-save`: VM state into `vmstate_node`, disks of `devices`.
    pub async fn snapshot_save(
        &self,
        tag: &str,
        vmstate_node: &str,
        devices: &[String],
        timeout: Duration,
    ) -> Result<(), QmpError> {
        let id = format!("rum-save-{tag}");
        let command = qmp::snapshot_save {
            job_id: id.clone(),
            tag: tag.to_owned(),
            vmstate: vmstate_node.to_owned(),
            devices: devices.to_vec(),
        };
        self.run_job(command, &id, timeout).await
    }

    pub async fn snapshot_load(
        &self,
        tag: &str,
        vmstate_node: &str,
        devices: &[String],
        timeout: Duration,
    ) -> Result<(), QmpError> {
        let id = format!("rum-load-{tag}");
        let command = qmp::snapshot_load {
            job_id: id.clone(),
            tag: tag.to_owned(),
            vmstate: vmstate_node.to_owned(),
            devices: devices.to_vec(),
        };
        self.run_job(command, &id, timeout).await
    }

    /// Leaves RAM in shared named files out of snapshots (QEMU's
    /// `x-ignore-shared`): they hold device state only, and the caller
    /// copies the files. Needed before a save and before a load alike.
    pub async fn leave_shared_ram_out(&self) -> Result<(), QmpError> {
        self.execute(qmp::migrate_set_capabilities {
            capabilities: vec![qmp::MigrationCapabilityStatus {
                capability: qmp::MigrationCapability::x_ignore_shared,
                state: true,
            }],
        })
        .await
        .map(drop)
    }

    pub async fn snapshot_delete(
        &self,
        tag: &str,
        devices: &[String],
        timeout: Duration,
    ) -> Result<(), QmpError> {
        let id = format!("rum-delete-{tag}");
        let command = qmp::snapshot_delete {
            job_id: id.clone(),
            tag: tag.to_owned(),
            devices: devices.to_vec(),
        };
        self.run_job(command, &id, timeout).await
    }
}

/// Until job `id` changes status (to `to`, when given), the events lag, or
/// the connection ends.
async fn wait_for_status_change(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    id: &str,
    to: Option<JobStatus>,
) {
    loop {
        match events.recv().await {
            Ok(Event::JOB_STATUS_CHANGE { data, .. })
                if data.id == id && to.is_none_or(|to| data.status == to) =>
            {
                return;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            // The connection is gone: let the next command report it.
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await;
            }
        }
    }
}
