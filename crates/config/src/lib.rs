//! Switchyard's configuration: TOML text in, a typed and validated
//! [`Config`] out, or *every* problem in the file at once, each with its file,
//! line, column, key path and what was expected.
//!
//! ```
//! let config = switchyard_config::parse(
//!     r#"
//!     [[listeners]]
//!     name = "public"
//!     listen = "127.0.0.1:8080"
//!       [[listeners.routes]]
//!       cluster = "api"
//!
//!     [[clusters]]
//!     name = "api"
//!     discovery = { static = ["127.0.0.1:9001"] }
//!     "#,
//!     "proxy.toml",
//! )?;
//! assert_eq!(config.listeners[0].routes[0].name, "public/0");
//! # Ok::<(), switchyard_config::Errors>(())
//! ```
//!
//! # Layout
//!
//! - `model.rs`: the typed configuration the rest of Switchyard consumes,
//!   with every default and the reason for it.
//! - `error.rs`: [`Errors`], [`ConfigError`] and [`ErrorKind`]; the `Display`
//!   form is the user-facing contract of `switchyard check`.
//! - `duration.rs`: [`parse_duration`] / [`format_duration`], shared with
//!   command-line flags.
//! - `reader.rs`: a span-aware reader over the `toml` crate's `DeTable`
//!   tree; every typed read yields a value or records a located error.
//! - `parse/`: document → model (`mod.rs`: top level and listeners,
//!   `route.rs`, `cluster.rs`); records names and references for validation.
//! - `validate.rs`: cross-references (unknown clusters, duplicate names,
//!   overlapping listen addresses).
//! - `lint.rs`: warnings for valid but suspicious configurations (a route
//!   an earlier one always wins over, gRPC to an HTTP/1.1 cluster).
//!
//! Parsing never stops at the first error: a bad value is reported and
//! replaced by its default so that the rest of the file is still checked.
//! Only TOML syntax errors end the run early, since the tree after them is
//! unreliable.

mod duration;
mod error;
mod lint;
pub mod model;
mod parse;
mod reader;
mod validate;

use std::path::Path;

use toml::de::DeTable;

pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{ConfigError, ErrorKind, Errors};
pub use model::*;

use reader::Ctx;
use validate::Refs;

/// Parses and validates configuration text; `file` is only used to label
/// errors.
pub fn parse(source: &str, file: &str) -> Result<Config, Errors> {
    parse_with_warnings(source, file).map(|c| c.config)
}

/// A valid configuration and the warnings about it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Config,
    /// Valid but almost certainly unintended settings, with locations.
    pub warnings: Vec<ConfigError>,
}

/// Like [`parse`], also returning the warnings ([`ErrorKind::ShadowedRoute`],
/// [`ErrorKind::GrpcToHttp1`]).
pub fn parse_with_warnings(source: &str, file: &str) -> Result<Checked, Errors> {
    let mut ctx = Ctx::new(file, source);
    let (root, syntax_errors) = DeTable::parse_recoverable(source);
    if !syntax_errors.is_empty() {
        for error in &syntax_errors {
            let span = error.span().unwrap_or(0..0);
            let message = error.message().trim().to_owned();
            ctx.report(&span, "", ErrorKind::Syntax(message));
        }
        return finish(ctx, Config::default());
    }
    let mut refs = Refs::default();
    let config = parse::document(&mut ctx, &root, &mut refs);
    validate::check(&mut ctx, &refs, config.admin.listen);
    lint::check(&mut ctx, &refs, &config);
    finish(ctx, config)
}

/// Reads and parses a file; an unreadable file is an [`Errors`] with one
/// [`ErrorKind::Io`] entry (without a position).
pub fn load(path: &Path) -> Result<Config, Errors> {
    load_with_warnings(path).map(|c| c.config)
}

/// Like [`load`], also returning the warnings.
pub fn load_with_warnings(path: &Path) -> Result<Checked, Errors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => parse_with_warnings(&source, &file),
        Err(error) => Err(Errors::from(ConfigError {
            file,
            line: 0,
            column: 0,
            path: String::new(),
            kind: ErrorKind::Io(error.to_string()),
        })),
    }
}

/// Errors in source order (cross-reference checks run last but their errors
/// belong where the offending value is).
fn finish(ctx: Ctx<'_>, config: Config) -> Result<Checked, Errors> {
    let mut errors = ctx.errors;
    if errors.is_empty() {
        let mut warnings = ctx.warnings;
        warnings.sort_by_key(|e| (e.line, e.column));
        return Ok(Checked { config, warnings });
    }
    errors.sort_by_key(|e| (e.line, e.column));
    Err(Errors { errors })
}
