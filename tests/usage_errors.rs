//! Bad command-line values of the everyday commands: each a clear message
//! naming the value, exit status 2, and nothing changed. No VM needed.

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
