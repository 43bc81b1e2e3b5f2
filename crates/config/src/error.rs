//! Located configuration errors.
//!
//! Every problem found in a file becomes one [`ConfigError`] carrying where it
//! is (file, line, column, dotted key path) and a structured [`ErrorKind`].
//! Tests and tools match on the kind; people read the `Display` form, which is
//! a user contract (`switchyard check` prints it verbatim, editors jump to the
//! `file:line:column` prefix).

use std::fmt;
use std::net::SocketAddr;

/// Every error found in one configuration file, in source order.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Errors {
    pub errors: Vec<ConfigError>,
}

impl Errors {
    /// Number of errors; never zero for an `Errors` returned by this crate.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl From<ConfigError> for Errors {
    fn from(error: ConfigError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// One error per line, no trailing newline, so callers can `eprintln!("{e}")`.
impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// One problem at one place in a configuration file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 only when the error has no position (an unreadable file).
    pub line: usize,
    /// 1-based, counted in characters (what editors show); 0 when `line` is 0.
    pub column: usize,
    /// Dotted key path of the offending value, e.g.
    /// `listeners[0].routes[1].cluster`; empty for syntax and I/O errors.
    pub path: String,
    pub kind: ErrorKind,
}

/// `{file}:{line}:{column}: {path}: {message}`; the position and the path are
/// left out when absent (I/O errors have neither, syntax errors no path).
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// What is wrong. Matched on by tests and tools; the wording lives in
/// `Display` only.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not valid TOML; the message comes from the TOML parser.
    Syntax(String),
    /// A key this table does not have; `expected` lists the keys it does.
    UnknownKey {
        key: String,
        expected: Vec<&'static str>,
    },
    /// A required key is absent (the error points at the enclosing table).
    MissingKey(&'static str),
    /// The value has the wrong TOML type (`found` is the TOML type name).
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    /// The value has the right type but is out of range or malformed;
    /// `found` is the value as written in the file.
    InvalidValue { expected: String, found: String },
    /// A route or listener names a cluster that is not defined.
    UnknownCluster { name: String, defined: Vec<String> },
    /// A second listener, cluster or endpoint with an already used name;
    /// `first_line` is where the first one is.
    DuplicateName {
        what: &'static str,
        name: String,
        first_line: usize,
    },
    /// A listen address that overlaps another socket of this process.
    DuplicateListen {
        address: SocketAddr,
        /// Who holds it already, e.g. `listener "public"` or `the admin endpoint`.
        used_by: String,
        used_by_address: SocketAddr,
    },
    /// Keys or values that cannot be combined.
    Conflict(String),
    /// Warning: an earlier route matches every request this one does, so
    /// this one is never chosen.
    ShadowedRoute { route: String, by: String },
    /// Warning: a route that carries gRPC sends it to an HTTP/1.1 cluster;
    /// every such call would fail as an invalid upstream response.
    GrpcToHttp1 {
        route: String,
        cluster: String,
        why: &'static str,
    },
    /// Warning: one client address may hold as many requests as a cluster
    /// of the listener admits, so one client can take all of its slots.
    ClientTakesCluster {
        listener: String,
        cluster: String,
        per_client: u32,
        max_requests: usize,
    },
    /// The file could not be read.
    Io(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(message) => write!(f, "invalid TOML: {message}"),
            Self::ShadowedRoute { route, by } => write!(
                f,
                "route \"{route}\" can never match: the earlier route \"{by}\" matches every request it does (first match wins)"
            ),
            Self::GrpcToHttp1 {
                route,
                cluster,
                why,
            } => write!(
                f,
                "route \"{route}\" looks like gRPC ({why}) but cluster \"{cluster}\" uses protocol http1; gRPC needs protocol = \"http2\""
            ),
            Self::ClientTakesCluster {
                listener,
                cluster,
                per_client,
                max_requests,
            } => write!(
                f,
                "listener \"{listener}\" lets one client have {per_client} requests in flight (max_requests_per_client) but cluster \"{cluster}\" admits {max_requests} (limits.max_requests): one client can take all of its slots; set max_requests_per_client below it"
            ),
            Self::UnknownKey { key, expected } => {
                write!(f, "unknown key \"{key}\"")?;
                if let Some(close) = closest(key, expected) {
                    write!(f, " (did you mean \"{close}\"?)")?;
                }
                write!(f, "; expected one of: {}", expected.join(", "))
            }
            Self::MissingKey(key) => write!(f, "missing required key \"{key}\""),
            Self::WrongType { expected, found } => write!(f, "expected {expected}, found {found}"),
            Self::InvalidValue { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            Self::UnknownCluster { name, defined } if defined.is_empty() => {
                write!(f, "unknown cluster \"{name}\"; no clusters are defined")
            }
            Self::UnknownCluster { name, defined } => write!(
                f,
                "unknown cluster \"{name}\"; defined clusters: {}",
                defined.join(", ")
            ),
            Self::DuplicateName {
                what,
                name,
                first_line,
            } => write!(
                f,
                "duplicate {what} \"{name}\" (first defined on line {first_line})"
            ),
            Self::DuplicateListen {
                address,
                used_by,
                used_by_address,
            } if address == used_by_address => {
                write!(f, "address {address} is already used by {used_by}")
            }
            Self::DuplicateListen {
                address,
                used_by,
                used_by_address,
            } => write!(
                f,
                "address {address} overlaps {used_by_address} used by {used_by}"
            ),
            Self::Conflict(message) => f.write_str(message),
            Self::Io(message) => write!(f, "cannot read configuration: {message}"),
        }
    }
}

/// The expected key closest to a misspelt one, if it is plausibly a typo
/// (edit distance of at most a third of its length, and at least 1).
fn closest(key: &str, expected: &[&'static str]) -> Option<&'static str> {
    let limit = (key.chars().count() / 3).max(1);
    expected
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance; keys are short, so the O(n·m) table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(closest("atempts", &["attempts", "on"]), Some("attempts"));
        assert_eq!(closest("zzz", &["attempts", "on"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn display_omits_missing_parts() {
        let error = ConfigError {
            file: "x.toml".into(),
            line: 0,
            column: 0,
            path: String::new(),
            kind: ErrorKind::Io("No such file".into()),
        };
        assert_eq!(
            error.to_string(),
            "x.toml: cannot read configuration: No such file"
        );
    }
}
