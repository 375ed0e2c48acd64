//! `[network]` and `[[ports]]`: the guest's hostname and forwarded ports.

use super::Checker;
use crate::config::model::{Network, PortForward};
use crate::config::names;
use crate::config::raw::{RawNetwork, RawPort};
use crate::config::span::KeyPath;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU16;

pub(super) fn network(c: &mut Checker, raw: RawNetwork, name: &str) -> Network {
    let path = KeyPath::root().key("network");
    let why = "rum uses QEMU user-mode networking, not libvirt";
    c.ignored(&raw.nat, path.key("nat"), why);
    c.ignored(&raw.wait_for_ip, path.key("wait_for_ip"), why);
    c.ignored(&raw.ip_wait_timeout_s, path.key("ip_wait_timeout_s"), why);
    c.ignored(&raw.interfaces, path.key("interfaces"), why);
    let hostname = match raw.hostname {
        Some(host) => {
            if let Err(why) = names::check_hostname(&host) {
                c.problem(path.key("hostname"), why);
            }
            host
        }
        None => names::hostname_from(name),
    };
    Network { hostname }
}

pub(super) fn ports(c: &mut Checker, raw: Vec<RawPort>) -> Vec<PortForward> {
    let mut seen: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, port) in raw.into_iter().enumerate() {
        let path = KeyPath::root().key("ports").index(i);
        let host = port_number(c, path.key("host"), port.host);
        let guest = port_number(c, path.key("guest"), port.guest);
        let bind_text = port.bind.unwrap_or_else(|| "127.0.0.1".into());
        let bind = match bind_text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                c.problem(
                    path.key("bind"),
                    format!("`{bind_text}` is not an IP address; the default is 127.0.0.1"),
                );
                None
            }
        };
        let (Some(host), Some(guest), Some(bind)) = (host, guest, bind) else {
            continue;
        };
        let clash = seen.iter().find(|((ip, p), _)| {
            *p == host.get() && (*ip == bind || ip.is_unspecified() || bind.is_unspecified())
        });
        if let Some((_, first)) = clash {
            c.problem(
                path.key("host"),
                format!(
                    "{host} is already forwarded by ports[{first}]; each host port can be used once"
                ),
            );
            continue;
        }
        seen.insert((bind, host.get()), i);
        out.push(PortForward { host, guest, bind });
    }
    out
}

fn port_number(c: &mut Checker, path: KeyPath, value: Option<u16>) -> Option<NonZeroU16> {
    match value {
        None => {
            c.problem(path, "is missing; give a port number from 1 to 65535");
            None
        }
        Some(n) => {
            let port = NonZeroU16::new(n);
            if port.is_none() {
                c.problem(path, "is 0; give a port number from 1 to 65535");
            }
            port
        }
    }
}
