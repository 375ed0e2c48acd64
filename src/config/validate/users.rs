//! `[user]` and `[ssh]`: the account rum creates and how `rum ssh` logs in.

use super::Checker;
use crate::config::model::{Ssh, User};
use crate::config::names;
use crate::config::raw::{RawSsh, RawUser};
use crate::config::span::KeyPath;

pub const DEFAULT_USER: &str = "rum";

pub(super) fn user(c: &mut Checker, raw: RawUser) -> User {
    let path = KeyPath::root().key("user");
    let name = raw.name.unwrap_or_else(|| DEFAULT_USER.into());
    if name == "root" {
        c.problem(
            path.key("name"),
            "is root; rum creates an unprivileged user with sudo, pick another name",
        );
    } else if let Err(why) = names::check_unix_name(&name) {
        c.problem(path.key("name"), why);
    }
    for (i, group) in raw.groups.iter().enumerate() {
        if let Err(why) = names::check_unix_name(group) {
            c.problem(path.key("groups").index(i), why);
        }
    }
    User {
        name,
        groups: raw.groups,
    }
}

pub(super) fn ssh(c: &mut Checker, raw: RawSsh, user: &User) -> Ssh {
    let path = KeyPath::root().key("ssh");
    c.ignored(
        &raw.interface,
        path.key("interface"),
        "rum reaches the guest through a forwarded port",
    );
    let user_name = raw.user.unwrap_or_else(|| user.name.clone());
    if let Err(why) = names::check_unix_name(&user_name) {
        c.problem(path.key("user"), why);
    }
    for (i, key) in raw.authorized_keys.iter().enumerate() {
        if let Err(why) = names::check_public_key(key) {
            c.problem(path.key("authorized_keys").index(i), why);
        }
    }
    let command = raw.command.unwrap_or_else(|| "ssh".into());
    if command.trim().is_empty() {
        c.problem(path.key("command"), "is empty; remove it to use `ssh`");
    }
    Ssh {
        user: user_name,
        command,
        authorized_keys: raw.authorized_keys,
    }
}
