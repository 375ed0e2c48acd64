//! Host ports: whether one a forward needs is free, and a free one for SSH.

use super::error::UpError;
use std::net::{IpAddr, Ipv4Addr, TcpListener};

pub fn check_port_free(bind: IpAddr, port: u16) -> Result<(), UpError> {
    TcpListener::bind((bind, port))
        .map(drop)
        .map_err(|_| UpError::PortTaken { bind, port })
}

/// A free loopback port for the SSH forward.
pub fn free_port() -> Result<u16, UpError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|_| UpError::PortTaken {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
    })?;
    Ok(listener.local_addr().map(|a| a.port()).unwrap_or(0))
}
