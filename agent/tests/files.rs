//! `push` and `pull` against the real agent binary.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::Agent;
use rum_agent::protocol::ErrorKind;
use rum_agent::{Error, PushOptions};

/// 50 MiB of data that is not one repeated byte.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_pulls_50_mib_with_modes_and_checksums() {
    let agent = Agent::start();
    let client = agent.client().await;
    let data = payload(50 * 1024 * 1024);
    let local = agent.path("big.bin");
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o750)).unwrap();

    let remote = agent.path("guest/dir/big.bin");
    let remote = remote.to_str().unwrap();
    let done = client
        .push_file(
            &local,
            remote,
            &PushOptions {
                create_dirs: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.size, data.len() as u64);
    let meta = std::fs::metadata(remote).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750, "mode kept");
    assert!(std::fs::read(remote).unwrap() == data);
    // No temporary files left beside it.
    let names: Vec<_> = std::fs::read_dir(agent.path("guest/dir"))
        .unwrap()
        .collect();
    assert_eq!(names.len(), 1);

    let back = agent.path("back.bin");
    let info = client.pull_file(remote, &back).await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.mode, 0o750);
    assert!(std::fs::read(&back).unwrap() == data);
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o7777,
        0o750
    );
}

#[tokio::test]
async fn push_bytes_with_mode_and_owner_replaces_atomically() {
    let agent = Agent::start();
    let client = agent.client().await;
    let remote = agent.path("conf");
    std::fs::write(&remote, "old").unwrap();
    let remote = remote.to_str().unwrap();
    let mut options = PushOptions {
        mode: Some(0o600),
        ..Default::default()
    };
    if nix::unistd::geteuid().is_root() {
        options.owner = Some("nobody".into());
    }
    client
        .push_bytes(b"new content", remote, &options)
        .await
        .unwrap();
    let meta = std::fs::metadata(remote).unwrap();
    assert_eq!(std::fs::read(remote).unwrap(), b"new content");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    if options.owner.is_some() {
        assert_eq!(meta.uid(), 65534);
    }
    // Empty files work too.
    client
        .push_bytes(b"", remote, &PushOptions::default())
        .await
        .unwrap();
    let (info, data) = client.pull_bytes(remote).await.unwrap();
    assert_eq!((info.size, data.len(), info.mode), (0, 0, 0o644));
}

#[tokio::test]
async fn reports_missing_files_and_bad_paths() {
    let agent = Agent::start();
    let client = agent.client().await;
    let err = client.pull_bytes("/nonexistent/file").await.unwrap_err();
    assert_eq!(err.agent_kind(), Some(ErrorKind::NotFound), "{err}");
    let err = client.pull_bytes("/").await.unwrap_err();
    assert_eq!(err.agent_kind(), Some(ErrorKind::BadRequest), "{err}");
    let err = client
        .push_bytes(b"x", "relative/path", &PushOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.agent_kind(), Some(ErrorKind::BadRequest), "{err}");
    // Missing parent without create_dirs.
    let missing = agent.path("no/such/dir/file");
    let err = client
        .push_bytes(b"x", missing.to_str().unwrap(), &PushOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Agent {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{err}"
    );
    // The session survives all of that.
    client.ping().await.unwrap();
}
