//! CPU time and memory of a process, from Linux's `/proc/PID/stat` and `/proc/PID/status`.

use std::path::PathBuf;

/// Which process: ourselves or another one by id.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    Myself,
    Other(u32),
}

impl Pid {
    fn path(self, file: &str) -> PathBuf {
        match self {
            Pid::Myself => PathBuf::from(format!("/proc/self/{file}")),
            Pid::Other(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
        }
    }
}

/// Clock ticks per second of `utime`/`stime`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in seconds, from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu(stat: &str, ticks: f64) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks)
}

/// CPU seconds (user + system) the process has used so far: from its CPU-time clock
/// (nanoseconds, all threads including exited ones), else from `/proc/PID/stat` (clock ticks,
/// 10 ms: a relay at 2% CPU for 10 s used only 20 of them).
pub fn cpu_seconds(pid: Pid) -> Option<f64> {
    cpu_clock_seconds(pid).or_else(|| {
        let stat = std::fs::read_to_string(pid.path("stat")).ok()?;
        parse_stat_cpu(&stat, ticks_per_second())
    })
}

/// The process's CPU-time clock (`clock_getcpuclockid`), in seconds.
fn cpu_clock_seconds(pid: Pid) -> Option<f64> {
    let pid = match pid {
        Pid::Myself => 0,
        Pid::Other(pid) => libc::pid_t::try_from(pid).ok()?,
    };
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out-pointer; the call only fills it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; `clock` came from clock_getcpuclockid.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in MiB.
pub fn parse_status_mb(status: &str, field: &str) -> Option<f64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: f64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    })
}

/// Resident memory now and its peak (VmRSS, VmHWM), in MiB.
pub fn memory_mb(pid: Pid) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(pid.path("status")).ok()?;
    Some((
        parse_status_mb(&status, "VmRSS")?,
        parse_status_mb(&status, "VmHWM")?,
    ))
}

/// UDP datagrams dropped because a socket's receive or send buffer was full:
/// `(RcvbufErrors, SndbufErrors)` of IPv4 and IPv6 together, for the whole network namespace.
pub fn udp_buffer_errors() -> Option<(u64, u64)> {
    let v4 = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let (mut rcv, mut snd) = parse_snmp_udp(&v4)?;
    if let Ok(v6) = std::fs::read_to_string("/proc/net/snmp6") {
        for line in v6.lines() {
            let mut f = line.split_whitespace();
            let (Some(key), Some(value)) = (f.next(), f.next().and_then(|v| v.parse::<u64>().ok()))
            else {
                continue;
            };
            match key {
                "Udp6RcvbufErrors" => rcv += value,
                "Udp6SndbufErrors" => snd += value,
                _ => {}
            }
        }
    }
    Some((rcv, snd))
}

/// `RcvbufErrors` and `SndbufErrors` from the two `Udp:` lines of `/proc/net/snmp`.
pub fn parse_snmp_udp(snmp: &str) -> Option<(u64, u64)> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("RcvbufErrors")?, get("SndbufErrors")?))
}

/// The whole machine's CPU time, from the `cpu` line of `/proc/stat` (clock ticks, all CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCpu {
    /// Time the hypervisor ran something else while this machine had work (`steal`).
    pub steal: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal.
    pub total: u64,
}

impl HostCpu {
    /// Percent of the machine's CPU time stolen between `earlier` and `self`.
    pub fn steal_percent_since(self, earlier: HostCpu) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        (total > 0).then(|| steal as f64 * 100.0 / total as f64)
    }
}

/// The `cpu` line of `/proc/stat`.
pub fn parse_host_cpu(stat: &str) -> Option<HostCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // Kernels before 2.6.11 have no steal column; guest time is already inside user.
    let steal = *ticks.get(7)?;
    Some(HostCpu {
        steal,
        total: ticks.iter().sum(),
    })
}

/// The machine's CPU time now.
pub fn host_cpu() -> Option<HostCpu> {
    parse_host_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat =
            "1234 (moq relay) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 9 0 100 0";
        assert_eq!(parse_stat_cpu(stat, 100.0), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage", 100.0), None);
    }

    #[test]
    fn parses_status_fields() {
        let status = "Name:\trelay\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(parse_status_mb(status, "VmRSS"), Some(100.0));
        assert_eq!(parse_status_mb(status, "VmHWM"), Some(200.0));
        assert_eq!(parse_status_mb(status, "VmSwap"), None);
    }

    #[test]
    fn parses_host_cpu_and_steal() {
        let before = "cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n";
        let after = "cpu  150 0 70 860 10 0 5 105 0 0\ncpu0 75 0 35 430 5 0 2 53 0 0\n";
        let (b, a) = (
            parse_host_cpu(before).unwrap(),
            parse_host_cpu(after).unwrap(),
        );
        assert_eq!(
            b,
            HostCpu {
                steal: 35,
                total: 1000
            }
        );
        // 70 of 200 ticks stolen.
        assert_eq!(a.steal_percent_since(b), Some(35.0));
        assert_eq!(b.steal_percent_since(a), None);
        assert_eq!(b.steal_percent_since(b), None);
        assert_eq!(parse_host_cpu("cpu  1 2 3 4\n"), None);
        assert_eq!(parse_host_cpu("intr 5\n"), None);
        assert!(host_cpu().is_some_and(|h| h.total > 0));
    }

    #[test]
    fn parses_snmp_udp() {
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 7 20 5 2\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(parse_snmp_udp(snmp), Some((5, 2)));
        assert_eq!(parse_snmp_udp("Ip: 1\n"), None);
    }

    #[test]
    fn the_cpu_clock_counts_nanoseconds_and_agrees_with_the_clock_ticks() {
        let me = Pid::Other(std::process::id());
        let ticks = || {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
            parse_stat_cpu(&stat, ticks_per_second()).unwrap()
        };
        let (clock0, ticks0) = (cpu_clock_seconds(me).unwrap(), ticks());
        // Burn 100 ms of CPU as the clock ticks count it, however long a loaded machine takes.
        let wall = std::time::Instant::now();
        let mut x = 0u64;
        while ticks() - ticks0 < 0.1 && wall.elapsed() < std::time::Duration::from_secs(30) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
        }
        let (clock1, ticks1) = (cpu_clock_seconds(me).unwrap(), ticks());
        let (by_clock, by_ticks) = (clock1 - clock0, ticks1 - ticks0);
        assert!(by_ticks >= 0.1, "only {by_ticks} s of CPU in 30 s");
        assert!(
            (by_clock - by_ticks).abs() < 0.05,
            "clock {by_clock} s, ticks {by_ticks} s"
        );
        // What the bench reports reads the same clock.
        assert!(cpu_seconds(me).is_some_and(|s| s >= clock1));
    }

    #[test]
    fn reads_our_own_process() {
        assert!(cpu_seconds(Pid::Myself).is_some());
        let (rss, hwm) = memory_mb(Pid::Myself).unwrap();
        assert!(rss > 0.0 && hwm >= rss);
    }
}
