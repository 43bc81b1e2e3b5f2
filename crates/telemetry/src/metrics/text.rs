//! The Prometheus text format (0.0.4) from prometheus-client's OpenMetrics
//! output, so that classic scrapers and `promtool check metrics` accept it.

/// Converts the OpenMetrics text that prometheus-client writes into the
/// classic Prometheus text format: counter families are named with their
/// `_total` suffix in HELP/TYPE, and the OpenMetrics-only `# UNIT` and
/// `# EOF` lines are dropped.
pub(super) fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut counters: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name);
            }
        }
    }
    for line in text.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
