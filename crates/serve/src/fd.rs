//! File descriptors: the process limit and what the connection limits may
//! use of it.
//!
//! Every listener of a process has its own connection limit, so that no
//! listener can take the descriptors another one needs: the admin API at
//! its limit leaves the data plane accepting, and the other way round. That
//! only holds while the limits, added up with what the process needs
//! besides connections, stay below `RLIMIT_NOFILE`. At start the process
//! raises its soft limit to the hard one ([`raise_limit`]) and checks the
//! sum ([`Budget`]); when it does not fit, it says so with the numbers
//! ([`check_at_start`]) and runs anyway — the limits then still bound each
//! listener, but a full one can make the others' accepts fail with EMFILE
//! (they pause and retry; see the crate documentation).

use std::{fmt, io};

use tracing::{debug, info, warn};

/// Default 256: descriptors the process needs besides the connections its
/// limits count — listening sockets, standard streams and log files, the
/// runtime's own (epoll, eventfd, signal pipe), discovery, health check,
/// tracing and registry store connections. These are few and short-lived;
/// 256 covers them with a wide margin.
pub const RESERVE: u64 = 256;

/// The process's `RLIMIT_NOFILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit in force: what the process may open.
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before [`raise_limit`].
    pub was: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (on Linux at most
/// `fs.nr_open` when the hard limit is unlimited) and returns the limits.
/// Many systems start services with a soft limit of 1024 and a much higher
/// hard one; a proxy needs the latter.
#[cfg(unix)]
pub fn raise_limit() -> io::Result<Limit> {
    use rlimit::Resource;
    let (was, _) = Resource::NOFILE.get()?;
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        // An unlimited hard limit cannot be the soft one on Linux: the
        // kernel caps descriptors at fs.nr_open.
        match nr_open() {
            Some(max) => {
                rlimit::increase_nofile_limit(max)?;
            }
            None => return Err(e),
        }
    }
    let (soft, hard) = Resource::NOFILE.get()?;
    Ok(Limit { soft, hard, was })
}

#[cfg(not(unix))]
pub fn raise_limit() -> io::Result<Limit> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no RLIMIT_NOFILE on this platform",
    ))
}

#[cfg(unix)]
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The descriptors a process's connection limits may use, plus a reserve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    parts: Vec<(String, u64)>,
    reserve: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    /// An empty budget with the [`RESERVE`].
    pub fn new() -> Self {
        Self {
            parts: Vec::new(),
            reserve: RESERVE,
        }
    }

    /// Adds `descriptors` for `what` (e.g. "listener public").
    pub fn add(&mut self, what: impl Into<String>, descriptors: usize) -> &mut Self {
        self.parts
            .push((what.into(), u64::try_from(descriptors).unwrap_or(u64::MAX)));
        self
    }

    /// Everything the budget counts, the reserve included.
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(self.reserve, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// Whether the budget fits below `limit` open descriptors.
    pub fn check(&self, limit: u64) -> Result<(), Shortfall> {
        let total = self.total();
        if total <= limit {
            return Ok(());
        }
        Err(Shortfall {
            limit,
            total,
            budget: self.clone(),
        })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (what, n) in &self.parts {
            write!(f, "{n} ({what}) + ")?;
        }
        write!(f, "{} (reserve) = {}", self.reserve, self.total())
    }
}

/// The connection limits do not fit below the descriptor limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub limit: u64,
    pub total: u64,
    pub budget: Budget,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the file descriptor limit ({}) is below what the connection limits may use: {}; \
             when they are reached, accepts and connects fail with \"too many open files\" \
             (listeners pause and retry) instead of each listener waiting at its own limit: \
             raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower the connection limits (max_connections)",
            self.limit, self.budget
        )
    }
}

impl std::error::Error for Shortfall {}

/// At process start: raises the descriptor limit and logs a warning naming
/// the numbers when `budget` does not fit below it. Returns the limit, or
/// `None` when it cannot be read (also logged).
pub fn check_at_start(budget: &Budget) -> Option<Limit> {
    let limit = match raise_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, budget = %budget, "cannot read or raise the file descriptor limit");
            return None;
        }
    };
    if limit.soft > limit.was {
        info!(
            from = limit.was,
            to = limit.soft,
            "raised the file descriptor limit"
        );
    }
    match budget.check(limit.soft) {
        Ok(()) => {
            debug!(limit = limit.soft, budget = %budget, "connection limits fit the file descriptor limit");
        }
        Err(shortfall) => warn!("{shortfall}"),
    }
    Some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_adds_up_and_names_the_numbers() {
        let mut b = Budget::new();
        b.add("listener public", 10_000).add("admin", 256);
        assert_eq!(b.total(), 10_000 + 256 + RESERVE);
        assert!(b.check(20_000).is_ok());
        let err = b.check(4096).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("limit (4096)")
                && text.contains("10000 (listener public) + 256 (admin) + 256 (reserve) = 10512"),
            "{text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn raising_reaches_the_hard_limit() {
        let limit = raise_limit().expect("limits readable");
        assert!(limit.soft >= limit.was);
        // Either the hard limit itself, or (unlimited hard limit) fs.nr_open.
        assert!(limit.soft == limit.hard || Some(limit.soft) == nr_open());
    }
}
