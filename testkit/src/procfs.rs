//! The one reader of `/proc/PID/status` for tests and benches: a process's uids (is a worker
//! running as its user?) and memory high-water mark (what a bench reports).
//!
//! ```text
//! /proc/PID/status    NAME:<tab>VALUE…     one field a line, e.g.
//!                     Uid:   1000 1000 1000 1000     (real, effective, saved, filesystem)
//!                     VmHWM:    10240 kB             (peak resident set)
//! ```

/// The fields of one read of `/proc/PID/status`.
pub struct ProcStatus(String);

impl ProcStatus {
    /// Reads `/proc/PID/status` now.
    pub fn read(pid: u32) -> std::io::Result<ProcStatus> {
        std::fs::read_to_string(format!("/proc/{pid}/status")).map(ProcStatus)
    }

    /// The text after `NAME:`, trimmed.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
    }

    /// The whitespace-separated numbers of field `name` (e.g. the four of `Uid`); `None` when
    /// the field is absent or one of them is not a number.
    pub fn numbers(&self, name: &str) -> Option<Vec<u64>> {
        self.field(name)?.split_whitespace().map(|v| v.parse().ok()).collect()
    }

    /// A size field (`VmHWM`, `VmRSS`, …) in KiB.
    pub fn kib(&self, name: &str) -> Option<u64> {
        self.field(name)?.strip_suffix("kB")?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_uids_and_a_high_water_mark() {
        let me = ProcStatus::read(std::process::id()).unwrap();
        let uids = me.numbers("Uid").unwrap();
        assert_eq!(uids.len(), 4, "{uids:?}");
        assert!(me.kib("VmHWM").is_some_and(|kib| kib > 0));
        assert_eq!(me.field("NoSuchField"), None);
        // A field name is matched whole: `Vm` is not `VmHWM`.
        assert_eq!(me.kib("Vm"), None);
    }
}
