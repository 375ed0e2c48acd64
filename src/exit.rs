//! What a `rum` command exits with.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// The command ran and something failed.
    Failure,
    /// The command line or the config is wrong; nothing was changed.
    Usage,
    /// Passed through from a guest command (`rum exec`): its exit code, or
    /// 128 + the signal that killed it.
    Guest(u8),
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Guest(code) => i32::from(code),
        }
    }
}
