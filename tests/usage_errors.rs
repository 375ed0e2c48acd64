//! The everyday commands without a VM: bad values are a clear message
//! naming them, exit status 2 and nothing changed; completions and the man
//! page come from the one command-line definition.

mod cli;

use cli::Sandbox;

#[test]
fn bad_timeouts_are_usage_errors() {
    let sandbox = Sandbox::new();
    for (command, value) in ["0", "-1", "x", "1e12", "inf"]
        .into_iter()
        .flat_map(|v| [("exec", v), ("wait", v)])
    {
        let out = match command {
            "exec" => sandbox.rum(&["exec", "--timeout", value, "--", "true"]),
            _ => sandbox.rum(&["wait", "--timeout", value]),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains(&format!("`{value}` is not a number of seconds above zero")),
            "{value}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(sandbox.root().join("data"))
            .unwrap()
            .count(),
        0,
        "nothing was made"
    );
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sandbox.rum(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["retry", "provision", "wait", "snapshot"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
        if shell == "bash" {
            let file = sandbox.root().join("rum.bash");
            std::fs::write(&file, &script).unwrap();
            let checked = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .status()
                .unwrap();
            assert!(checked.success(), "bash -n rejects the script");
        }
    }
    let bad = sandbox.rum(&["completions", "nosh"]);
    assert_eq!(bad.status.code(), Some(2));
    let man = sandbox.rum(&["manpage"]);
    assert!(man.status.success());
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH rum 1"),
        "{page}"
    );
    assert!(
        page.contains("retry") && page.contains("provision"),
        "{page}"
    );
}
