//! What a `rum` command exits with.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The command ran and something failed.
    Failure,
    /// The command line or the config is wrong; nothing was changed.
    Usage,
    /// Passed through from a guest command (`rum exec`): its exit code, or
    /// 128 + the signal that killed it.
    Guest(u8),
    /// A deadline passed (`--timeout`), as timeout(1) reports it.
    TimedOut,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Guest(code) => i32::from(code),
            Exit::TimedOut => 124,
        }
    }
}
