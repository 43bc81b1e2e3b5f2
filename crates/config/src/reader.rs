//! A span-aware reader over the TOML document tree.
//!
//! The `toml` crate's `DeTable` keeps the byte span of every key and value.
//! [`Table`] and [`Field`] wrap those nodes together with their dotted path so
//! that every typed read either yields a value or records a located error in
//! [`Ctx`] and yields `None`. Callers then substitute a default and carry on:
//! that is how one pass reports every error in a file instead of the first.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::duration::{DURATION_SYNTAX, parse_duration};
use crate::error::{ConfigError, ErrorKind};

/// Where errors are collected, plus what is needed to locate them.
#[derive(Debug)]
pub(crate) struct Ctx<'s> {
    file: &'s str,
    source: &'s str,
    /// Byte offset at which each line starts, for offset → line lookups.
    line_starts: Vec<usize>,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<ConfigError>,
}

impl<'s> Ctx<'s> {
    pub(crate) fn new(file: &'s str, source: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            source,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// 1-based line and character column of a byte offset.
    pub(crate) fn location(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        // Spans from the parser always fall on char boundaries; `get` keeps a
        // bogus one from panicking.
        let column = self
            .source
            .get(start..offset)
            .map_or(offset - start, |text| text.chars().count());
        (line, column + 1)
    }

    /// Records a warning: valid, but almost certainly a mistake.
    pub(crate) fn warn(&mut self, span: &Range<usize>, path: &str, kind: ErrorKind) {
        let (line, column) = self.location(span.start);
        self.warnings.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            path: path.to_owned(),
            kind,
        });
    }

    pub(crate) fn report(&mut self, span: &Range<usize>, path: &str, kind: ErrorKind) {
        let (line, column) = self.location(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            path: path.to_owned(),
            kind,
        });
    }

    /// The value as written, shortened so that one error stays one line.
    fn snippet(&self, span: &Range<usize>) -> String {
        let text = self.source.get(span.clone()).unwrap_or("");
        let text = text.lines().next().unwrap_or("");
        if text.chars().count() > 60 {
            format!("{}…", text.chars().take(60).collect::<String>())
        } else {
            text.to_owned()
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A table whose keys have been checked against the keys it may contain.
#[derive(Debug)]
pub(crate) struct Table<'a, 'i> {
    entries: &'a DeTable<'i>,
    pub(crate) span: Range<usize>,
    pub(crate) path: String,
}

impl<'a, 'i> Table<'a, 'i> {
    /// Wraps the document root and reports its unknown keys.
    pub(crate) fn root(
        ctx: &mut Ctx<'_>,
        root: &'a Spanned<DeTable<'i>>,
        expected: &'static [&'static str],
    ) -> Self {
        let table = Self {
            entries: root.get_ref(),
            span: root.span(),
            path: String::new(),
        };
        table.check_keys(ctx, expected);
        table
    }

    /// Reports every key that is not in `expected`, at the key itself.
    fn check_keys(&self, ctx: &mut Ctx<'_>, expected: &'static [&'static str]) {
        for (key, _) in self.entries.iter() {
            if !expected.contains(&key.get_ref().as_ref()) {
                ctx.report(
                    &key.span(),
                    &join(&self.path, key.get_ref()),
                    ErrorKind::UnknownKey {
                        key: key.get_ref().to_string(),
                        expected: expected.to_vec(),
                    },
                );
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Field<'a, 'i>> {
        let (name, value) = self.entries.get_key_value(key)?;
        Some(Field {
            value: value.get_ref(),
            span: value.span(),
            key_span: name.span(),
            path: join(&self.path, key),
        })
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The keys present, in the map's order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a str> + use<'a, 'i> {
        self.entries.iter().map(|(key, _)| key.get_ref().as_ref())
    }

    /// Like [`get`](Self::get), but a missing key is an error located at the
    /// table (its `[header]` or `{`).
    pub(crate) fn required(&self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<Field<'a, 'i>> {
        let field = self.get(key);
        if field.is_none() {
            self.missing(ctx, key);
        }
        field
    }

    pub(crate) fn missing(&self, ctx: &mut Ctx<'_>, key: &'static str) {
        ctx.report(
            &self.span,
            &join(&self.path, key),
            ErrorKind::MissingKey(key),
        );
    }

    /// Reads an optional key with `read`; `None` if absent or invalid (the
    /// error, if any, is already recorded).
    pub(crate) fn opt<T>(
        &self,
        ctx: &mut Ctx<'_>,
        key: &str,
        read: impl FnOnce(&Field<'a, 'i>, &mut Ctx<'_>) -> Option<T>,
    ) -> Option<T> {
        self.get(key).and_then(|field| read(&field, ctx))
    }
}

/// One value in the document, with its location and path.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a, 'i> {
    pub(crate) value: &'a DeValue<'i>,
    pub(crate) span: Range<usize>,
    /// The span of the key naming this value (its own span for array items).
    pub(crate) key_span: Range<usize>,
    pub(crate) path: String,
}

impl<'a, 'i> Field<'a, 'i> {
    fn wrong_type<T>(&self, ctx: &mut Ctx<'_>, expected: &'static str) -> Option<T> {
        ctx.report(
            &self.span,
            &self.path,
            ErrorKind::WrongType {
                expected,
                found: self.value.type_str(),
            },
        );
        None
    }

    /// Records that the value is malformed or out of range.
    pub(crate) fn invalid<T>(&self, ctx: &mut Ctx<'_>, expected: impl Into<String>) -> Option<T> {
        let found = ctx.snippet(&self.span);
        ctx.report(
            &self.span,
            &self.path,
            ErrorKind::InvalidValue {
                expected: expected.into(),
                found,
            },
        );
        None
    }

    /// Records that this key cannot be used together with something else.
    pub(crate) fn conflict(&self, ctx: &mut Ctx<'_>, message: impl Into<String>) {
        ctx.report(
            &self.key_span,
            &self.path,
            ErrorKind::Conflict(message.into()),
        );
    }

    pub(crate) fn str(&self, ctx: &mut Ctx<'_>) -> Option<&'a str> {
        match self.value {
            DeValue::String(s) => Some(s.as_ref()),
            _ => self.wrong_type(ctx, "a string"),
        }
    }

    /// A string that must not be empty.
    pub(crate) fn non_empty_str(&self, ctx: &mut Ctx<'_>) -> Option<&'a str> {
        let s = self.str(ctx)?;
        if s.is_empty() {
            return self.invalid(ctx, "a non-empty string");
        }
        Some(s)
    }

    pub(crate) fn bool(&self, ctx: &mut Ctx<'_>) -> Option<bool> {
        match self.value {
            DeValue::Boolean(b) => Some(*b),
            _ => self.wrong_type(ctx, "a boolean (true or false)"),
        }
    }

    /// An integer within `min..=max`.
    pub(crate) fn int_in(&self, ctx: &mut Ctx<'_>, min: i64, max: i64) -> Option<i64> {
        let DeValue::Integer(int) = self.value else {
            return self.wrong_type(ctx, "an integer");
        };
        match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(v) if (min..=max).contains(&v) => Some(v),
            _ if max == i64::MAX => self.invalid(ctx, format!("an integer >= {min}")),
            _ => self.invalid(ctx, format!("an integer from {min} to {max}")),
        }
    }

    pub(crate) fn u32_in(&self, ctx: &mut Ctx<'_>, min: u32, max: u32) -> Option<u32> {
        let v = self.int_in(ctx, min.into(), max.into())?;
        // In range by construction.
        u32::try_from(v).ok()
    }

    pub(crate) fn u16_in(&self, ctx: &mut Ctx<'_>, min: u16, max: u16) -> Option<u16> {
        let v = self.int_in(ctx, min.into(), max.into())?;
        u16::try_from(v).ok()
    }

    /// A count: an integer of at least `min` (bounded by `i64::MAX`).
    pub(crate) fn usize_min(&self, ctx: &mut Ctx<'_>, min: usize) -> Option<usize> {
        let min = i64::try_from(min).unwrap_or(i64::MAX);
        let v = self.int_in(ctx, min, i64::MAX)?;
        usize::try_from(v).ok()
    }

    /// A number; integers are accepted too (`ratio = 1`).
    pub(crate) fn float(&self, ctx: &mut Ctx<'_>) -> Option<f64> {
        let parsed = match self.value {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|v| v as f64),
            _ => return self.wrong_type(ctx, "a number"),
        };
        match parsed {
            Some(v) if v.is_finite() => Some(v),
            _ => self.invalid(ctx, "a finite number"),
        }
    }

    /// A number in `min..=max`.
    pub(crate) fn float_in(&self, ctx: &mut Ctx<'_>, min: f64, max: f64) -> Option<f64> {
        let v = self.float(ctx)?;
        if !(min..=max).contains(&v) {
            return self.invalid(ctx, format!("a number from {min} to {max}"));
        }
        Some(v)
    }

    pub(crate) fn duration(&self, ctx: &mut Ctx<'_>) -> Option<Duration> {
        let DeValue::String(s) = self.value else {
            return self.wrong_type(ctx, "a duration string such as \"2s\"");
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(_) => self.invalid(ctx, DURATION_SYNTAX),
        }
    }

    /// A duration that must be above zero (a zero timeout would fail
    /// everything, a zero interval would spin).
    pub(crate) fn positive_duration(&self, ctx: &mut Ctx<'_>) -> Option<Duration> {
        let d = self.duration(ctx)?;
        if d.is_zero() {
            return self.invalid(ctx, "a duration above zero");
        }
        Some(d)
    }

    /// `ip:port`, with IPv6 in brackets. Host names are refused: the proxy
    /// binds and connects to these without a resolver.
    pub(crate) fn socket_addr(&self, ctx: &mut Ctx<'_>) -> Option<SocketAddr> {
        let s = self.str(ctx)?;
        match s.parse() {
            Ok(addr) => Some(addr),
            Err(_) => self.invalid(ctx, "ip:port, e.g. 127.0.0.1:8080 or [::1]:8080"),
        }
    }

    /// One of a fixed set of strings, mapped to its model value.
    pub(crate) fn choice<T: Clone>(&self, ctx: &mut Ctx<'_>, choices: &[(&str, T)]) -> Option<T> {
        let s = self.str(ctx)?;
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == s) {
            return Some(value.clone());
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        self.invalid(ctx, format!("one of {}", names.join(", ")))
    }

    pub(crate) fn array(&self, ctx: &mut Ctx<'_>) -> Option<Vec<Field<'a, 'i>>> {
        let DeValue::Array(items) = self.value else {
            return self.wrong_type(ctx, "an array");
        };
        let items = items
            .iter()
            .enumerate()
            .map(|(i, item)| Field {
                value: item.get_ref(),
                span: item.span(),
                key_span: item.span(),
                path: format!("{}[{i}]", self.path),
            })
            .collect();
        Some(items)
    }

    /// Reads every element with `read`, skipping (already reported) bad ones.
    pub(crate) fn array_of<T>(
        &self,
        ctx: &mut Ctx<'_>,
        mut read: impl FnMut(&Field<'a, 'i>, &mut Ctx<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.array(ctx)?;
        Some(items.iter().filter_map(|item| read(item, ctx)).collect())
    }

    /// A table whose keys are data, not names from a schema (header maps).
    pub(crate) fn table_with_any_keys(&self, ctx: &mut Ctx<'_>) -> Option<Table<'a, 'i>> {
        let DeValue::Table(entries) = self.value else {
            return self.wrong_type(ctx, "a table");
        };
        Some(Table {
            entries,
            span: self.span.clone(),
            path: self.path.clone(),
        })
    }

    /// A table (`[header]` or inline); unknown keys are reported here.
    pub(crate) fn table(
        &self,
        ctx: &mut Ctx<'_>,
        expected: &'static [&'static str],
    ) -> Option<Table<'a, 'i>> {
        let DeValue::Table(entries) = self.value else {
            return self.wrong_type(ctx, "a table");
        };
        let table = Table {
            entries,
            span: self.span.clone(),
            path: self.path.clone(),
        };
        table.check_keys(ctx, expected);
        Some(table)
    }
}
