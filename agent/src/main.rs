//! The rum guest agent. Runs as root in the guest (a systemd service), serves
//! the protocol on the virtio-serial port and on AF_VSOCK, never on a network.
//!
//! No `unsafe` here: what needs it is in the library's `os` module.
#![forbid(unsafe_code)]

mod server;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match server::Args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rum-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rum-agent: {message}");
            ExitCode::FAILURE
        }
    }
}
