//! Seed build time with the real agent payload: render the cloud-config,
//! write the ISO (in memory, and to a file through `seed::ensure_iso`).
//! Run: `cargo bench --bench seed`. Goal: at most 20 ms per build.

use rum::agent_binary;
use rum_seed::{HostKey, MountArgs, Seed, SeedArgs};
use std::borrow::Cow;
use std::time::{Duration, Instant};

const RUNS: usize = 50;

fn args() -> SeedArgs<'static> {
    SeedArgs {
        instance_id: "bench-0123abcd-5eed".into(),
        hostname: "bench".into(),
        user: "rum".into(),
        groups: vec!["docker".into()],
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKuhpCEgrc rum@bench".into()],
        host_key: HostKey {
            private:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPo1 rum@bench".into(),
        },
        mac_address: "52:54:00:9f:05:ca".into(),
        mounts: vec![MountArgs {
            tag: "mnt-project".into(),
            target: "/mnt/project".into(),
            readonly: false,
        }],
        autologin: None,
        agent: Cow::Borrowed(agent_binary::BYTES),
    }
}

fn measure(mut run: impl FnMut()) -> (Duration, Duration) {
    run();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[RUNS / 2])
}

fn main() {
    let args = args();
    let mut size = 0;
    let (memory_min, memory_median) = measure(|| {
        let seed = Seed::render(&args).unwrap();
        let mut out = Vec::with_capacity(4 << 20);
        size = seed.write_iso(&mut out).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("seed.iso");
    let (file_min, file_median) = measure(|| {
        let seed = Seed::render(&args).unwrap();
        let mut out = std::fs::File::create(&iso).unwrap();
        seed.write_iso(&mut out).unwrap();
    });
    let goal = Duration::from_millis(20);
    println!(
        "seed build, agent payload {} bytes, ISO {size} bytes, {RUNS} runs",
        agent_binary::BYTES.len()
    );
    println!(
        "  {:<22} {:>10} {:>10} {:>12}",
        "", "min", "median", "median/goal"
    );
    for (name, min, median) in [
        ("render + ISO in memory", memory_min, memory_median),
        ("render + ISO to a file", file_min, file_median),
    ] {
        println!(
            "  {name:<22} {:>8.2}ms {:>8.2}ms {:>11.2}x",
            ms(min),
            ms(median),
            median.as_secs_f64() / goal.as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
