//! Ownership of child processes that tests spawn.
//!
//! A test that panics must not leave a server running behind it: the next
//! test run would find its port or its files busy. [`ChildGuard`] kills the
//! child it owns, by that child's own PID (never by name), when dropped.

use std::fmt;

/// Kills the wrapped child process (SIGKILL to its PID) when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    label: String,
}

enum Child {
    Tokio(tokio::process::Child),
    Std(std::process::Child),
}

impl ChildGuard {
    /// Guards a child spawned with `tokio::process::Command`.
    pub fn new(label: impl Into<String>, child: tokio::process::Child) -> Self {
        Self {
            child: Some(Child::Tokio(child)),
            label: label.into(),
        }
    }

    /// Guards a child spawned with `std::process::Command`.
    pub fn from_std(label: impl Into<String>, child: std::process::Child) -> Self {
        Self {
            child: Some(Child::Std(child)),
            label: label.into(),
        }
    }

    /// The child's PID, or `None` once it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        match self.child.as_ref()? {
            Child::Tokio(child) => child.id(),
            Child::Std(child) => Some(child.id()),
        }
    }

    /// Mutable access to a tokio child (e.g. to take its stdout).
    pub fn tokio_child(&mut self) -> Option<&mut tokio::process::Child> {
        match self.child.as_mut()? {
            Child::Tokio(child) => Some(child),
            Child::Std(_) => None,
        }
    }

    /// Mutable access to a std child.
    pub fn std_child(&mut self) -> Option<&mut std::process::Child> {
        match self.child.as_mut()? {
            Child::Std(child) => Some(child),
            Child::Tokio(_) => None,
        }
    }

    /// Kills the child now (idempotent).
    pub fn kill(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        match child {
            Child::Tokio(mut child) => {
                // start_kill signals the PID tokio recorded at spawn; tokio's
                // orphan reaper collects the zombie, so no blocking wait here
                // (Drop may run on a runtime thread).
                if let Err(err) = child.start_kill() {
                    tracing::debug!(label = %self.label, %err, "child already gone");
                }
                let _ = child.try_wait();
            }
            Child::Std(mut child) => {
                if let Err(err) = child.kill() {
                    tracing::debug!(label = %self.label, %err, "child already gone");
                }
                // After SIGKILL the wait is immediate; it avoids a zombie.
                let _ = child.wait();
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildGuard")
            .field("label", &self.label)
            .field("pid", &self.pid())
            .finish()
    }
}
