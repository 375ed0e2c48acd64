//! The bring-up rollback guard: each step registers its inverse right after
//! it succeeds; an early return unwinds them in reverse order. `disarm()`
//! keeps everything once the VM is up.

type Undo = Box<dyn FnOnce() -> Result<(), String>>;

#[derive(Default)]
pub struct Guard {
    steps: Vec<(String, Undo)>,
    disarmed: bool,
}

impl Guard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers how to undo `what`. Call it only for what this run created.
    pub fn push(
        &mut self,
        what: impl Into<String>,
        undo: impl FnOnce() -> Result<(), String> + 'static,
    ) {
        if !self.disarmed {
            self.steps.push((what.into(), Box::new(undo)));
        }
    }

    /// Registers the removal of a file this run created.
    pub fn push_remove(&mut self, what: impl Into<String>, path: &std::path::Path) {
        let path = path.to_path_buf();
        self.push(what, move || {
            std::fs::remove_file(&path).map_err(|e| e.to_string())
        });
    }

    /// Keeps everything; later pushes are ignored.
    pub fn disarm(&mut self) {
        self.disarmed = true;
        self.steps.clear();
    }

    /// Undoes every registered step, last first, and reports the ones that failed.
    pub fn unwind(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some((what, undo)) = self.steps.pop() {
            tracing::debug!("rolling back: {what}");
            if let Err(why) = undo() {
                failures.push(format!("{what}: {why}"));
            }
        }
        failures
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for failure in self.unwind() {
            eprintln!("warning: rollback could not undo {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<&'static str>>>;

    /// A shared log and a maker of undo steps that append their name to it.
    fn recorder() -> (Log, impl Fn(&'static str) -> Undo) {
        let log: Log = Rc::default();
        let make = {
            let log = log.clone();
            move |name: &'static str| -> Undo {
                let log = log.clone();
                Box::new(move || {
                    log.borrow_mut().push(name);
                    Ok(())
                })
            }
        };
        (log, make)
    }

    #[test]
    fn unwinds_last_in_first_out_on_drop() {
        let (log, undo) = recorder();
        {
            let mut guard = Guard::new();
            guard.push("overlay", undo("overlay"));
            guard.push("virtiofsd", undo("virtiofsd"));
            guard.push("qemu", undo("qemu"));
        }
        assert_eq!(*log.borrow(), ["qemu", "virtiofsd", "overlay"]);
    }

    #[test]
    fn disarm_keeps_everything_and_ignores_later_pushes() {
        let (log, undo) = recorder();
        {
            let mut guard = Guard::new();
            guard.push("overlay", undo("overlay"));
            guard.disarm();
            guard.push("late", undo("late"));
        }
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn empty_guard_does_nothing() {
        assert!(Guard::new().unwind().is_empty());
    }

    #[test]
    fn failures_are_reported_and_the_rest_still_runs() {
        let (log, undo) = recorder();
        let mut guard = Guard::new();
        guard.push("first", undo("first"));
        guard.push("broken", || Err("still running".into()));
        let failures = guard.unwind();
        assert_eq!(failures, ["broken: still running"]);
        assert_eq!(*log.borrow(), ["first"]);
    }
}
