//! The CPU limit: how much of the machine the agent uses, workers included, and what to do
//! about it.
//!
//! [`CpuMeter`] reads `utime + stime` of the daemon (`/proc/self/stat`, all threads) and of each
//! worker (`/proc/<pid>/stat`) and keeps the growth per pid, so a worker that exits keeps the
//! time it used and a new one starts from zero. The share is over a sliding window
//! ([`WINDOW`]) and of the *whole machine* (all cores), as the policy's `cpu_limit_percent` is.
//!
//! [`Throttle`] turns shares into a frame rate: above the limit it halves the rate, step by
//! step, down to [`MIN_FPS_MILLI`], and then pauses capture; once the share has fallen below half
//! the limit it climbs back one step at a time. It is pure, so its rules are tested directly.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Span over which CPU use is averaged.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lowest throttled rate before pausing (one frame every 5 s).
pub const MIN_FPS_MILLI: u32 = 200;

/// Measures the agent's CPU time, workers included.
#[derive(Debug)]
pub struct CpuMeter {
    ticks_per_sec: f64,
    cores: f64,
    /// Last `utime + stime` seen per pid (0 = the daemon itself).
    last: HashMap<u32, u64>,
    /// Ticks accumulated over all pids ever measured.
    total: u64,
    samples: VecDeque<(Instant, u64)>,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuMeter {
    pub fn new() -> Self {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(0);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self {
            ticks_per_sec: if hz > 0 { hz as f64 } else { 100.0 },
            cores: cores as f64,
            last: HashMap::new(),
            total: 0,
            samples: VecDeque::new(),
        }
    }

    /// Takes a sample now of the daemon and `workers`; returns the share of the machine used
    /// over the window so far, in percent, once two samples exist.
    pub fn sample(&mut self, workers: &[u32]) -> Option<f64> {
        let now = Instant::now();
        let mut seen = Vec::with_capacity(workers.len() + 1);
        for (key, path) in std::iter::once((0u32, "/proc/self/stat".to_string()))
            .chain(workers.iter().map(|p| (*p, format!("/proc/{p}/stat"))))
        {
            let Some(ticks) =
                std::fs::read_to_string(&path).ok().and_then(|s| parse_stat_ticks(&s))
            else {
                continue;
            };
            let before = self.last.insert(key, ticks).unwrap_or(0);
            self.total += ticks.saturating_sub(before);
            seen.push(key);
        }
        self.last.retain(|k, _| seen.contains(k));
        self.samples.push_back((now, self.total));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= WINDOW {
            self.samples.pop_front();
        }
        self.percent()
    }

    /// Share of the machine over the current window, percent.
    pub fn percent(&self) -> Option<f64> {
        let (t0, c0) = *self.samples.front()?;
        let (t1, c1) = *self.samples.back()?;
        let wall = t1.duration_since(t0).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        Some((c1 - c0) as f64 / self.ticks_per_sec / wall / self.cores * 100.0)
    }

    /// CPU seconds used by everything measured since this meter was made.
    pub fn total_secs(&self) -> f64 {
        self.total as f64 / self.ticks_per_sec
    }
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")" come fields 3.. ; utime is field 14, i.e. the 12th of these.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// What capture should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Frames per 1000 s; 0 when paused.
    pub fps_milli: u32,
    pub throttled: bool,
}

impl Decision {
    pub fn paused(&self) -> bool {
        self.fps_milli == 0
    }
}

/// The frame-rate governor; see the module docs.
#[derive(Clone, Debug)]
pub struct Throttle {
    limit_percent: f64,
    base_fps_milli: u32,
    /// 0 = full rate; each step halves it; past the last rate step: paused.
    level: u32,
}

impl Throttle {
    pub fn new(limit_percent: f64, base_fps_milli: u32) -> Self {
        Self { limit_percent, base_fps_milli, level: 0 }
    }

    /// Adopts new policy values, keeping the current throttle level.
    pub fn set(&mut self, limit_percent: f64, base_fps_milli: u32) {
        self.limit_percent = limit_percent;
        self.base_fps_milli = base_fps_milli;
        self.level = self.level.min(self.max_level());
    }

    fn max_level(&self) -> u32 {
        // Halvings until the rate would go below MIN_FPS_MILLI, plus one for "paused".
        let mut level = 0;
        let mut fps = self.base_fps_milli;
        while fps / 2 >= MIN_FPS_MILLI {
            fps /= 2;
            level += 1;
        }
        level + 1
    }

    /// Feeds one measurement (percent of the machine) and returns the decision.
    pub fn observe(&mut self, percent: f64) -> Decision {
        if percent > self.limit_percent {
            self.level = (self.level + 1).min(self.max_level());
        } else if percent < self.limit_percent / 2.0 && self.level > 0 {
            self.level -= 1;
        }
        self.decision()
    }

    pub fn decision(&self) -> Decision {
        if self.level >= self.max_level() {
            return Decision { fps_milli: 0, throttled: true };
        }
        let fps_milli = (self.base_fps_milli >> self.level).max(1);
        Decision { fps_milli, throttled: self.level > 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "1234 (a) b) (c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat_ticks(line), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_ticks(&own).is_some());
    }

    #[test]
    fn meter_sees_its_own_work() {
        let mut m = CpuMeter::new();
        assert_eq!(m.sample(&[]), None);
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let p = m.sample(&[u32::MAX]).unwrap();
        assert!(p > 0.0, "a busy loop must show up, got {p}");
        assert!(m.total_secs() > 0.0);
    }

    #[test]
    fn throttle_halves_then_pauses_then_recovers() {
        let mut t = Throttle::new(5.0, 1000);
        assert_eq!(t.observe(1.0), Decision { fps_milli: 1000, throttled: false });
        assert_eq!(t.observe(9.0).fps_milli, 500);
        assert_eq!(t.observe(9.0).fps_milli, 250);
        let d = t.observe(9.0);
        assert!(d.paused() && d.throttled, "{d:?}");
        assert!(t.observe(9.0).paused(), "stays paused while still above");
        // Between half the limit and the limit: hold.
        assert!(t.observe(3.0).paused());
        assert_eq!(t.observe(1.0).fps_milli, 250);
        assert_eq!(t.observe(1.0).fps_milli, 500);
        assert_eq!(t.observe(1.0), Decision { fps_milli: 1000, throttled: false });
    }
}
