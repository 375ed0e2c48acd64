use super::*;

fn config(extra: &str) -> Config {
    let text = format!(
        "[image]\nbase = \"debian-12\"\n\n[resources]\ncpus = 2\nmemory_mb = 1024\n\n{extra}"
    );
    crate::config::parse_str(&text, Path::new("/srv/web/rum.toml"))
        .expect("a valid config")
        .config
}

const PORT: &str = "[[ports]]\nhost = 8080\nguest = 80\n\n";
/// A VM made before rum fixed its mounts.
const OLD: Mounts = Mounts {
    fixed: None,
    live: false,
};

const MOUNT: &str = "[[mounts]]\nsource = \"/tmp\"\ntarget = \"/mnt/tmp\"\n\n";

#[test]
fn an_unchanged_config_has_no_changes() {
    let c = config(PORT);
    assert!(Applied::of(&c, &OLD).changes(&c, &OLD).is_empty());
    assert_eq!(Report(&[]).to_string(), "");
}

#[test]
fn each_edit_is_named_with_when_it_applies() {
    let was = Applied::of(&config(PORT), &OLD);
    let now = config(&format!(
        "{MOUNT}[user]\nname = \"alice\"\n\n[drives.data]\nsize = \"1G\"\n"
    ));
    let changes = was.changes(&now, &OLD);
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.key.as_str(), c.was.is_some(), c.now.is_some(), c.applies))
        .collect();
    assert_eq!(
        seen,
        [
            ("[[ports]] 127.0.0.1:8080", true, false, Applies::Live),
            ("[[mounts]] /mnt/tmp", false, true, Applies::NextBoot),
            ("[user] name", true, true, Applies::Reset),
            ("[drives.data] size", false, true, Applies::NewVm),
        ]
    );
    let text = Report(&changes).to_string();
    assert!(
        text.contains("[[ports]] 127.0.0.1:8080 (guest 80) removed"),
        "{text}"
    );
    assert!(text.contains("[[mounts]] /mnt/tmp (/tmp) added"), "{text}");
    assert!(text.contains("→ alice"), "{text}");
    assert!(text.contains("`rum retry --reset`"), "{text}");
    assert!(text.contains("`rum destroy`, then `rum up`"), "{text}");
}

#[test]
fn an_update_takes_only_the_kinds_applied() {
    let mut applied = Applied::of(&config(""), &OLD);
    let now = config(&format!("{PORT}[user]\nname = \"alice\"\n"));
    applied.update(&now, &OLD, &[Applies::Live]);
    let left: Vec<_> = applied
        .changes(&now, &OLD)
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(left, ["[user] name"]);
    applied.update(&now, &OLD, &Applies::ALL);
    assert!(applied.changes(&now, &OLD).is_empty());
}

#[test]
fn a_step_edit_applies_now() {
    let was = Applied::of(&config("[provision.system]\nscript = \"echo 1\"\n"), &OLD);
    let changes = was.changes(&config("[provision.system]\nscript = \"echo 2\"\n"), &OLD);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].applies, Applies::Now);
    assert!(changes[0].applies.is_applied_by_retry());
}

#[test]
fn a_mount_applies_live_on_a_vm_with_spare_ports_unless_it_was_there_from_the_start() {
    let with = |live| Mounts {
        fixed: Some(vec!["mnt-a".into()]),
        live,
    };
    let a = "[[mounts]]\nsource = \"/tmp\"\ntarget = \"/mnt/a\"\n\n";
    let b = "[[mounts]]\nsource = \"/var\"\ntarget = \"/mnt/b\"\n\n";
    let was = Applied::of(&config(a), &with(true));
    let kinds = |mounts: &Mounts, extra: &str| -> Vec<Applies> {
        was.changes(&config(extra), mounts)
            .into_iter()
            .map(|c| c.applies)
            .collect()
    };
    assert_eq!(kinds(&with(true), &format!("{a}{b}")), [Applies::Live]);
    assert_eq!(kinds(&with(false), &format!("{a}{b}")), [Applies::Reset]);
    assert_eq!(
        kinds(&with(true), b),
        [Applies::Live, Applies::Reset],
        "mnt-a removed needs --reset"
    );
}
