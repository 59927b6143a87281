//! What the kernel says about a process (Linux `/proc`): resident memory and
//! CPU time, per process and per thread name, for the run report.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/*/stat` times. 100 on every Linux
/// configuration this tool runs on (`getconf CLK_TCK`); reading it would need
/// libc, which this crate does not link.
const TICKS_PER_SEC: f64 = 100.0;

/// Resident set size in KiB, or `None` when the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `(comm, user + system seconds)` from a `stat` file.
fn parse_stat(text: &str) -> Option<(String, f64)> {
    // comm is in parentheses and may contain spaces; fields resume after ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SEC))
}

/// CPU seconds the whole process has used.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, s)| s)
}

/// CPU seconds per thread name (threads of the same name summed), for
/// threads alive now. Thread names tell the tokio workers from the audit
/// writer from everything else.
pub fn cpu_by_thread(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Some((comm, secs)) = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            *out.entry(comm).or_insert(0.0) += secs;
        }
    }
    out
}

/// Busy and total CPU time of the whole machine so far, in clock ticks
/// (`/proc/stat`): shows how much of the machine other processes took.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// Cores kept busy between two [`machine_ticks`] readings.
pub fn machine_cores_busy(before: (u64, u64), after: (u64, u64), cores: usize) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    busy / total * cores as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let line = "1234 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        let (comm, secs) = parse_stat(line).unwrap();
        assert_eq!(comm, "tokio runtime");
        assert!((secs - 3.0).abs() < 1e-9);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_secs(pid).is_some());
        assert!(!cpu_by_thread(pid).is_empty());
    }

    #[test]
    fn reads_the_machine() {
        let a = machine_ticks().unwrap();
        let b = machine_ticks().unwrap();
        assert!(a.0 <= a.1 && b.1 >= a.1);
        let busy = machine_cores_busy(a, (a.0 + 50, a.1 + 100), 2);
        assert!((busy - 1.0).abs() < 1e-9);
    }
}
