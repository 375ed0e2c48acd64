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
fn completions_ask_rum_and_the_man_page_covers_every_command() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "rum.toml",
        "[image]\nbase = \"img.qcow2\"\n\n[[provision.system]]\nname = \"packages\"\nscript = \"true\"\n\n[[provision.system]]\nname = \"app\"\nscript = \"true\"\n",
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = sandbox.rum(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("COMPLETE"), "{shell}: {script}");
    }
    // bash, as it completes `rum retry --from <Tab>` in the project.
    let script = sandbox.root().join("rum.bash");
    std::fs::write(&script, sandbox.rum(&["completions", "bash"]).stdout).unwrap();
    let complete = |line: &str| {
        let words = line
            .split(' ')
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>();
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_TYPE=9; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _clap_complete_rum rum '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.join(" "),
            words.len() - 1,
            line.rsplit(' ').next().unwrap(),
            line.rsplit(' ').nth(1).unwrap(),
        );
        // The script calls rum by its absolute path; rum.toml is found from here.
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(program)
            .current_dir(sandbox.project())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(complete("rum retry --from "), "packages\napp\nboot\n");
    let commands = complete("rum re");
    assert!(
        commands.contains("retry") && commands.contains("reload"),
        "{commands}"
    );
    let bad = sandbox.rum(&["completions", "nosh"]);
    assert_eq!(bad.status.code(), Some(2));
    let man = sandbox.rum(&["manpage"]);
    assert!(man.status.success());
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.contains(".TH rum 1"), "{page}");
    assert!(
        page.contains("retry") && page.contains("provision"),
        "{page}"
    );
}
