//! Process gauges read from `/proc/self` when metrics are scraped.

/// A snapshot of the process's resource use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub cpu_seconds: f64,
    pub threads: u64,
}

/// Reads the current stats; fields that cannot be read stay zero (e.g. on a
/// platform without `/proc`), which is better than failing a scrape.
pub fn stats() -> ProcessStats {
    let mut s = ProcessStats::default();
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut it = statm
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let page = page_size();
        s.virtual_bytes = it.next().unwrap_or(0) * page;
        s.resident_bytes = it.next().unwrap_or(0) * page;
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which may contain spaces, start
        // after the last ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 (1-based) of the whole
            // line, i.e. 11 and 12 after the state field at index 0.
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            s.cpu_seconds = (ticks(11) + ticks(12)) / CLOCK_TICKS;
            s.threads = f.get(17).and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        s.open_fds = dir.count() as u64;
    }
    s
}

/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux platform Switchyard targets.
const CLOCK_TICKS: f64 = 100.0;

fn page_size() -> u64 {
    // 4 KiB pages on x86_64 and the common aarch64 kernels; read the real
    // value from the auxiliary vector when available.
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| {
            auxv.chunks_exact(16).find_map(|c| {
                let key = u64::from_ne_bytes(c[..8].try_into().ok()?);
                let val = u64::from_ne_bytes(c[8..].try_into().ok()?);
                (key == 6).then_some(val) // AT_PAGESZ
            })
        })
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_real_process_stats() {
        let s = stats();
        assert!(s.resident_bytes > 0, "{s:?}");
        assert!(s.open_fds >= 3, "{s:?}");
        assert!(s.threads >= 1, "{s:?}");
    }
}
