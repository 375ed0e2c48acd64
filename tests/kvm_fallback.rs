//! `accel = "auto"` on a host whose /dev/kvm opens but hangs guests: where
//! the CPU has no VT-x or AMD-V (a software KVM such as PVM on a nested
//! cloud VM) `rum up` takes TCG at once and says why; where KVM still hangs
//! a boot (or QEMU refuses to start on it), `rum up` sees the console stop
//! (or QEMU's error), says so, and boots the VM again under TCG, which it
//! keeps, instead of waiting out its 600 s agent timeout. Where KVM works, or is absent, `auto` simply boots. Runs
//! without RUM_ACCEL on purpose.

mod support;

use support::{E2e, RumRun};

/// `rum up -d` as `auto` picks, and what it did. The stall timeouts are
/// rum's own: 45 s under KVM, and under TCG the generous 300 s a busy host
/// needs (30 s for both once cut a TCG boot starved by other VMs short).
fn up(env: &E2e, vars: &[(&str, &str)]) -> (RumRun, String, String) {
    let up = env.rum_unset(&["RUM_ACCEL"], vars, &["up", "-d"]);
    up.assert_success();
    let status = env.rum_data(&["status"]);
    let accel = status["runtime"]["accel"].as_str().unwrap().to_owned();
    let state = std::fs::read_to_string(
        std::path::Path::new(status["data_dir"].as_str().unwrap()).join("state.json"),
    )
    .unwrap();
    (up, accel, state)
}

fn cpu_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == flag))
}

#[test]
fn a_hanging_kvm_falls_back_to_tcg() {
    let Some(env) = support::e2e() else { return };
    env.write_rum_toml("[provision.system]\nscript = \"echo provisioned > /var/tmp/p\"\n");
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let software_kvm = kvm_opens && !cpu_flag("vmx") && !cpu_flag("svm");

    // A software KVM is known before anything boots.
    let (first, accel, state) = up(&env, &[]);
    assert!(
        !first.stderr.contains("KVM did not boot the guest"),
        "{first}"
    );
    if software_kvm {
        assert!(first.stderr.contains("is a software KVM"), "{first}");
        assert_eq!(accel, "tcg");
        eprintln!("software KVM here: TCG chosen before the boot");
    } else {
        assert_eq!(accel, if kvm_opens { "kvm" } else { "tcg" }, "{first}");
        eprintln!("auto booted under {accel}");
    }
    assert!(!state.contains("kvm_hangs"), "{state}");
    assert_eq!(env.guest_sh("cat /var/tmp/p"), "provisioned\n");

    // Taken for hardware KVM, it hangs the boot: the stall is seen and the
    // VM boots again under TCG, which it keeps.
    if software_kvm {
        env.rum(&["down"]).assert_success();
        let (again, accel, state) = up(&env, &[("RUM_TEST_KVM_IS_HARDWARE", "1")]);
        // Which way it fails is the host's: a hung boot, or (seen on one
        // machine of this kind) QEMU refusing to start on an MSR.
        let hung = again.stderr.contains("KVM did not boot the guest");
        let refused = again
            .stderr
            .contains("QEMU could not start the guest under KVM");
        assert!(hung || refused, "{again}");
        eprintln!(
            "taken for hardware, KVM {}",
            if hung {
                "hung the boot"
            } else {
                "refused to start"
            }
        );
        assert!(
            again.stderr.contains("starting it again with TCG"),
            "{again}"
        );
        assert_eq!(accel, "tcg");
        assert!(
            state.contains("\"kvm_hangs\": true"),
            "kept for later boots: {state}"
        );
    }
    // The snapshot taken under the accelerator the VM got loads into it.
    env.rum_unset(&["RUM_ACCEL"], &[], &["retry"])
        .assert_success();
    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
