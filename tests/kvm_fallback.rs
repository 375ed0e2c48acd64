//! `accel = "auto"` on a host whose /dev/kvm opens but hangs guests (nested
//! virtualisation): `rum up` sees the console stop, says so, and boots the
//! VM again under TCG, which it keeps; instead of waiting out its 600 s
//! agent timeout. Where KVM works, or is absent, `auto` simply boots. One
//! boot (two where KVM hangs). Runs without RUM_ACCEL on purpose.

mod support;

#[test]
fn a_hanging_kvm_falls_back_to_tcg() {
    let Some(env) = support::e2e() else { return };
    env.write_rum_toml("[provision.system]\nscript = \"echo provisioned > /var/tmp/p\"\n");
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let up = env.rum_unset(
        &["RUM_ACCEL"],
        &[("RUM_STALL_TIMEOUT", "30")],
        &["up", "-d"],
    );
    up.assert_success();
    let status = env.rum_data(&["status"]);
    let accel = status["runtime"]["accel"].as_str().unwrap().to_owned();
    let fell_back = up.stderr.contains("KVM did not boot the guest");
    let state = std::fs::read_to_string(
        std::path::Path::new(status["data_dir"].as_str().unwrap()).join("state.json"),
    )
    .unwrap();
    if fell_back {
        assert!(kvm_opens, "{up}");
        assert_eq!(accel, "tcg", "{status}");
        assert!(up.stderr.contains("starting it again with TCG"), "{up}");
        assert!(
            state.contains("\"kvm_hangs\": true"),
            "kept for later boots: {state}"
        );
        eprintln!("KVM hangs guests here: fell back to TCG");
    } else {
        assert_eq!(accel, if kvm_opens { "kvm" } else { "tcg" }, "{up}");
        assert!(!state.contains("kvm_hangs"), "{state}");
        eprintln!("auto booted under {accel}");
    }
    assert_eq!(env.guest_sh("cat /var/tmp/p"), "provisioned\n");
    // The snapshot taken under the accelerator the VM got loads into it.
    env.rum_unset(&["RUM_ACCEL"], &[], &["retry"])
        .assert_success();
    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
