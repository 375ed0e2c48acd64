//! Devices plugged into and out of a running VM: a Unix-socket chardev for
//! a vhost-user backend, the device on a given bus, and its removal, which
//! the guest must acknowledge (QEMU reports it with `DEVICE_DELETED`).

use crate::{Qmp, QmpError};
use qapi::qmp::{self, Event};
use std::path::Path;
use std::time::Duration;

impl Qmp {
    /// `chardev-add`: a client socket to the Unix socket at `path`.
    pub async fn add_socket_chardev(&self, id: &str, path: &Path) -> Result<(), QmpError> {
        let socket = qmp::ChardevSocket {
            addr: qmp::SocketAddressLegacy::unix(qmp::UnixSocketAddressWrapper {
                data: qmp::UnixSocketAddress {
                    path: path.to_string_lossy().into_owned(),
                    abstract_: None,
                    tight: None,
                },
            }),
            server: Some(false),
            base: qmp::ChardevCommon {
                logappend: None,
                logfile: None,
            },
            nodelay: None,
            reconnect: None,
            telnet: None,
            tls_authz: None,
            tls_creds: None,
            tn3270: None,
            wait: None,
            websocket: None,
        };
        self.execute(qmp::chardev_add {
            id: id.to_owned(),
            backend: qmp::ChardevBackend::socket(qmp::ChardevSocketWrapper { data: socket }),
        })
        .await
        .map(drop)
    }

    pub async fn remove_chardev(&self, id: &str) -> Result<(), QmpError> {
        self.execute(qmp::chardev_remove { id: id.to_owned() })
            .await
            .map(drop)
    }

    /// `device_add` of `driver` as `id` on `bus` with string properties.
    pub async fn add_device(
        &self,
        driver: &str,
        id: &str,
        bus: &str,
        properties: &[(&str, &str)],
    ) -> Result<(), QmpError> {
        let arguments = properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), qapi::Any::from((*v).to_owned())))
            .collect();
        self.execute(qmp::device_add {
            driver: driver.to_owned(),
            id: Some(id.to_owned()),
            bus: Some(bus.to_owned()),
            arguments,
        })
        .await
        .map(drop)
    }

    /// `device_del`, then waits until QEMU reports the device gone (the
    /// guest has released it) or `timeout` passes.
    pub async fn remove_device(&self, id: &str, timeout: Duration) -> Result<(), QmpError> {
        let mut events = self.events();
        self.execute(qmp::device_del { id: id.to_owned() }).await?;
        let deleted = async {
            loop {
                match events.recv().await {
                    Ok(Event::DEVICE_DELETED { data, .. })
                        if data.device.as_deref() == Some(id) =>
                    {
                        return;
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, deleted)
            .await
            .map_err(|_| QmpError::Timeout {
                command: "device_del",
                timeout,
            })
    }
}
