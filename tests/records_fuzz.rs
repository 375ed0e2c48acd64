//! rum's records on damaged bytes: `state.json`, `vm.json` and
//! `applied.json` either load or give an error that names the file and how
//! to recover; never a panic, never a silent "nothing here".

use proptest::prelude::*;
use rum::drift::Applied;
use rum::lifecycle::RuntimeInfo;
use rum::record::{self, Record};
use rum::state::{Milestone, State};
use std::path::Path;

/// Writes `bytes` as `name` and loads it as a `T`.
fn loads<T: Record>(name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    match record::load::<T>(&path) {
        Ok(found) => prop_assert!(found.is_some(), "a file that is there loaded as none"),
        Err(e) => {
            let text = e.to_string();
            prop_assert!(text.contains(&path.display().to_string()), "{}", text);
            prop_assert!(text.contains(T::RECOVERY), "{}", text);
        }
    }
    Ok(())
}

/// A state file such as `rum up` leaves: milestones and their history.
fn sample_state() -> Vec<u8> {
    let mut state = State::default();
    state.start(Milestone::Booted);
    state.complete(Milestone::Booted);
    state.start(Milestone::SystemProvisioned);
    state.fail(
        Milestone::SystemProvisioned,
        "step `app` failed (exit code 2)",
    );
    serde_json::to_vec_pretty(&state).unwrap()
}

fn mutated(sample: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = sample.len();
    proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut bytes = sample.clone();
        for (at, byte, how) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match how {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    })
}

#[test]
fn the_sample_loads_and_a_missing_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, sample_state()).unwrap();
    assert!(record::load::<State>(&path).unwrap().is_some());
    assert!(
        record::load::<State>(Path::new("/nonexistent/state.json"))
            .unwrap()
            .is_none()
    );
    assert!(
        record::load::<RuntimeInfo>(Path::new("/nonexistent/vm.json"))
            .unwrap()
            .is_none()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_load_or_name_the_file(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        loads::<State>("state.json", &bytes)?;
        loads::<RuntimeInfo>("vm.json", &bytes)?;
        loads::<Applied>("applied.json", &bytes)?;
    }

    #[test]
    fn a_damaged_state_file_loads_or_names_itself(bytes in mutated(sample_state())) {
        loads::<State>("state.json", &bytes)?;
    }
}
