//! The checkpoint cache: after each system step rum keeps a live snapshot
//! whose key chains everything the guest has run since `pre-provision` (the
//! previous key, the step's name, its script text). A retry restores the
//! deepest checkpoint whose key still matches the scripts on disk and runs
//! the steps after it. The last system step's checkpoint is `post-system`.

use crate::state::{SnapshotRecord, State};
use rum_agent::protocol::Script;
use sha2::{Digest, Sha256};

/// Taken once per VM, right before the first step.
pub const PRE_PROVISION: &str = "pre-provision";
/// The checkpoint after the last system step.
pub const POST_SYSTEM: &str = "post-system";
/// Tags of the checkpoints after every system step but the last.
pub const STEP_PREFIX: &str = "step-";

/// rum's own snapshots: `pre-provision`, the step checkpoints, `post-system`.
pub fn is_rums(tag: &str) -> bool {
    matches!(tag, PRE_PROVISION | POST_SYSTEM) || tag.starts_with(STEP_PREFIX)
}

/// The checkpoint tag after system step `index` of `system`.
pub fn tag(system: &[Script], index: usize) -> String {
    if index + 1 == system.len() {
        POST_SYSTEM.to_owned()
    } else {
        format!("{STEP_PREFIX}{}", system[index].name)
    }
}

/// The key of the state after each system step, starting from the
/// `pre-provision` snapshot `pre`.
pub fn chain(pre: &SnapshotRecord, system: &[Script]) -> Vec<String> {
    let mut key = digest(&[
        PRE_PROVISION.as_bytes(),
        pre.created.to_string().as_bytes(),
        pre.qemu_version.as_bytes(),
    ]);
    system
        .iter()
        .map(|step| {
            key = digest(&[
                key.as_bytes(),
                step.name.as_bytes(),
                step.content.as_bytes(),
            ]);
            key.clone()
        })
        .collect()
}

/// The deepest system step before `before` that has a checkpoint matching
/// `keys`, with that checkpoint's tag. Found by key, not by tag: a step that
/// was last and is no longer keeps its `post-system` checkpoint.
pub fn deepest(state: &State, keys: &[String], before: usize) -> Option<(usize, String)> {
    (0..before.min(keys.len()))
        .rev()
        .find_map(|i| find(state, &keys[i]).map(|tag| (i, tag)))
}

/// Where a run that should start at system step `at` (`system.len()`: after
/// every step) starts: the deepest checkpoint before `at` that matches the
/// steps now, and the first step after it; else `pre-provision` and step 0.
pub fn resume_point(state: &State, system: &[Script], at: usize) -> (String, usize) {
    let keys = state
        .snapshots
        .get(PRE_PROVISION)
        .map(|pre| chain(pre, system))
        .unwrap_or_default();
    match deepest(state, &keys, at) {
        Some((i, tag)) => (tag, i + 1),
        None => (PRE_PROVISION.to_owned(), 0),
    }
}

/// The tag of a checkpoint recorded with `key`.
pub fn find(state: &State, key: &str) -> Option<String> {
    state
        .snapshots
        .iter()
        .find(|(_, r)| r.key.as_deref() == Some(key))
        .map(|(tag, _)| tag.clone())
}

/// Which of rum's step checkpoints to delete before `adding` one more, so
/// that at most `budget` are kept: first those that match no step of the
/// current chain (`keys`), oldest first, then the oldest others. Re-saving an
/// existing tag adds none.
pub fn to_prune(state: &State, keys: &[String], budget: usize, adding: &str) -> Vec<String> {
    let mut owned: Vec<(bool, u64, &String)> = state
        .snapshots
        .iter()
        .filter(|(tag, r)| r.rum_owned && tag.as_str() != PRE_PROVISION && tag.as_str() != adding)
        .map(|(tag, r)| {
            let current = r.key.as_ref().is_some_and(|k| keys.contains(k));
            (current, r.created, tag)
        })
        .collect();
    let excess = (owned.len() + 1).saturating_sub(budget);
    owned.sort();
    owned
        .into_iter()
        .take(excess)
        .map(|(_, _, tag)| tag.clone())
        .collect()
}

/// For each checkpoint recorded in `state`: the system step it follows in
/// the chain of the steps on disk now, or `None` where it matches none (it
/// is stale). Empty when there is no `pre-provision` or a step file cannot
/// be read.
pub fn matches_now(state: &State, all: &[Script]) -> Vec<(String, Option<String>)> {
    let Some(pre) = state.snapshots.get(PRE_PROVISION) else {
        return Vec::new();
    };
    let system: Vec<Script> = all
        .iter()
        .filter(|s| s.run_on == rum_agent::protocol::RunOn::System)
        .cloned()
        .collect();
    let keys = chain(pre, &system);
    state
        .snapshots
        .iter()
        .filter_map(|(tag, r)| {
            let key = r.key.as_ref()?;
            let step = keys
                .iter()
                .position(|k| k == key)
                .map(|i| system[i].name.clone());
            Some((tag.clone(), step))
        })
        .collect()
}

fn digest(fields: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for field in fields {
        hash.update((field.len() as u64).to_le_bytes());
        hash.update(field);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DeviceSet;
    use crate::vm::spec::{Accel, FirmwareKind, Transport};
    use rum_agent::protocol::RunOn;

    fn step(name: &str, content: &str) -> Script {
        Script {
            name: name.into(),
            content: content.into(),
            order: 100,
            run_on: RunOn::System,
        }
    }

    fn record(created: u64, key: Option<String>) -> SnapshotRecord {
        SnapshotRecord {
            created,
            qemu_version: "10.0.2".into(),
            devices: DeviceSet {
                machine: "pc-q35-10.0".into(),
                accel: Accel::Tcg,
                cpus: 2,
                memory_mb: 1024,
                firmware: FirmwareKind::Bios,
                drives: vec![],
                mounts: vec![],
                agent: Transport::Serial,
                hotplug_ports: 0,
                plugged: vec![],
                ram: Default::default(),
                free_page_reporting: false,
                vm_generation_id: false,
                tcg_la57_off: false,
            },
            rum_owned: true,
            system_scripts: None,
            key,
            ram: None,
        }
    }

    #[test]
    fn records_of_snapshots_the_disk_lacks_are_dropped() {
        let mut state = State::default();
        state
            .snapshots
            .insert(PRE_PROVISION.into(), record(1, None));
        state.snapshots.insert("step-one".into(), record(2, None));
        state.snapshots.insert("mine".into(), record(3, None));
        let gone = state.reconcile(&[PRE_PROVISION, "mine", "unrecorded"]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "step-one");
        assert_eq!(
            state.snapshots.keys().collect::<Vec<_>>(),
            [&"mine".to_owned(), &PRE_PROVISION.to_owned()]
        );
        assert!(state.reconcile(&[PRE_PROVISION, "mine"]).is_empty());
    }

    #[test]
    fn a_key_covers_every_step_before_it() {
        let pre = record(1, None);
        let a = [
            step("packages", "apt"),
            step("app", "make"),
            step("test", "t"),
        ];
        let keys = chain(&pre, &a);
        // The last step changed: the first two keys hold.
        let b = [
            step("packages", "apt"),
            step("app", "make"),
            step("test", "t2"),
        ];
        let changed = chain(&pre, &b);
        assert_eq!(keys[..2], changed[..2]);
        assert_ne!(keys[2], changed[2]);
        // An earlier edit changes every later key, as does a reorder.
        let c = [
            step("packages", "apt2"),
            step("app", "make"),
            step("test", "t"),
        ];
        assert!(chain(&pre, &c).iter().zip(&keys).all(|(x, y)| x != y));
        let d = [
            step("app", "make"),
            step("packages", "apt"),
            step("test", "t"),
        ];
        assert!(chain(&pre, &d).iter().zip(&keys).all(|(x, y)| x != y));
        // Another pre-provision snapshot starts another chain.
        assert_ne!(chain(&record(2, None), &a), keys);
        assert_eq!(tag(&a, 0), "step-packages");
        assert_eq!(tag(&a, 2), POST_SYSTEM);
    }

    #[test]
    fn the_budget_drops_stale_checkpoints_first_then_the_oldest() {
        let pre = record(1, None);
        let steps = [step("one", "1"), step("two", "2"), step("three", "3")];
        let keys = chain(&pre, &steps);
        let mut state = State::default();
        state
            .snapshots
            .insert(PRE_PROVISION.into(), record(1, None));
        state
            .snapshots
            .insert("step-one".into(), record(10, Some(keys[0].clone())));
        state
            .snapshots
            .insert("step-old".into(), record(20, Some("stale".into())));
        state
            .snapshots
            .insert("step-two".into(), record(5, Some(keys[1].clone())));
        let mut mine = record(2, None);
        mine.rum_owned = false;
        state.snapshots.insert("mine".into(), mine);
        assert!(to_prune(&state, &keys, 8, POST_SYSTEM).is_empty());
        assert_eq!(to_prune(&state, &keys, 3, POST_SYSTEM), ["step-old"]);
        assert_eq!(
            to_prune(&state, &keys, 2, POST_SYSTEM),
            ["step-old", "step-two"]
        );
        // Saving over an existing tag needs no room.
        assert_eq!(to_prune(&state, &keys, 3, "step-one"), Vec::<String>::new());
    }

    #[test]
    fn the_deepest_matching_checkpoint_wins() {
        let pre = record(1, None);
        let steps = [step("one", "1"), step("two", "2"), step("three", "3")];
        let keys = chain(&pre, &steps);
        let mut state = State::default();
        assert_eq!(deepest(&state, &keys, 3), None);
        let mut keep = |tag: &str, key: &str| {
            state
                .snapshots
                .insert(tag.into(), record(5, Some(key.to_owned())));
        };
        keep("step-one", &keys[0]);
        keep("step-two", &keys[1]);
        let found = |state: &State, keys: &[String], before| deepest(state, keys, before);
        assert_eq!(found(&state, &keys, 3), Some((1, "step-two".into())));
        assert_eq!(
            found(&state, &keys, 1),
            Some((0, "step-one".into())),
            "--from two"
        );
        assert_eq!(found(&state, &keys, 0), None, "--from one");
        state
            .snapshots
            .insert("step-two".into(), record(6, Some("stale".into())));
        assert_eq!(found(&state, &keys, 3), Some((0, "step-one".into())));
        // A fourth step added: the third's checkpoint is still `post-system`.
        let four = [
            step("one", "1"),
            step("two", "2"),
            step("three", "3"),
            step("four", "4"),
        ];
        let longer = chain(&pre, &four);
        state
            .snapshots
            .insert(POST_SYSTEM.into(), record(7, Some(keys[2].clone())));
        assert_eq!(found(&state, &longer, 4), Some((2, POST_SYSTEM.into())));
    }
}
