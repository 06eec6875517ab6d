//! One module per command group. Each `run` takes checked arguments, does the work
//! and reports how the process should exit.

pub mod agent;
pub mod audit;
pub mod certify;
pub mod decide;
pub mod escalation;
pub mod events;
pub mod kill;
pub mod loadgen;
pub mod policy;
pub mod rollout;
pub mod scale;
pub mod serve;

/// How a command ended, when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit code 0.
    Success,
    /// Exit code 1: the command printed why (e.g. findings of `policy validate`).
    Failed,
    /// Exit code 2: a decision other than allow or warn.
    NotAllowed,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::NotAllowed => 2,
        }
    }
}
