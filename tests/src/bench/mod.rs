//! The benchmark's measuring and reporting: rows with their baseline and target, medians,
//! Markdown and JSON output, and a child runner that reports wall time and peak RSS.

pub mod cost;
pub mod datapath;
pub mod dnat;
pub mod footprint;
pub mod reaction;
pub mod repair;

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
pub enum Target {
    None,
    /// value / baseline must be at least this.
    RatioAtLeast(f64),
    /// value / baseline must be at most this (lower is better: a time against its floor).
    RatioAtMost(f64),
    /// value must be at most this.
    AtMost(f64),
    /// value - baseline must be at most this.
    DeltaAtMost(f64),
}

#[derive(Clone, Debug)]
pub struct Row {
    pub section: String,
    pub case: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<f64>,
    /// value / baseline, or baseline / value for speed-ups.
    pub ratio: Option<f64>,
    pub target: Target,
}

impl Row {
    pub fn value(section: &str, case: &str, value: f64, unit: &str) -> Self {
        Self {
            section: section.into(),
            case: case.into(),
            value,
            unit: unit.into(),
            baseline: None,
            ratio: None,
            target: Target::None,
        }
    }

    pub fn target(section: &str, case: &str, value: f64, unit: &str, target: Target) -> Self {
        Self {
            target,
            ..Self::value(section, case, value, unit)
        }
    }

    /// `value` against `baseline` (higher is better): the ratio is value / baseline.
    pub fn ratio(
        section: &str,
        case: &str,
        value: f64,
        baseline: f64,
        unit: &str,
        target: Target,
    ) -> Self {
        Self {
            baseline: Some(baseline),
            ratio: Some(value / baseline),
            target,
            ..Self::value(section, case, value, unit)
        }
    }

    /// How many times faster `fast` is than `slow` (times in the same unit).
    pub fn speedup(section: &str, case: &str, slow: f64, fast: f64, target: Target) -> Self {
        Self {
            baseline: Some(slow),
            ratio: Some(slow / fast),
            target,
            ..Self::value(section, case, fast, "ms")
        }
    }

    /// `value` against a floor (lower is better): the target is on the difference.
    pub fn delta(
        section: &str,
        case: &str,
        value: f64,
        floor: f64,
        unit: &str,
        max_delta: f64,
    ) -> Self {
        Self {
            baseline: Some(floor),
            ratio: None,
            target: Target::DeltaAtMost(max_delta),
            ..Self::value(section, case, value, unit)
        }
    }

    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::None => None,
            Target::RatioAtLeast(t) => self.ratio.map(|r| r >= t),
            Target::RatioAtMost(t) => self.ratio.map(|r| r <= t),
            Target::AtMost(t) => Some(self.value <= t),
            Target::DeltaAtMost(t) => self.baseline.map(|b| self.value - b <= t),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => String::new(),
            Target::RatioAtLeast(t) => format!(">= {t}x"),
            Target::RatioAtMost(t) => format!("<= {t}x"),
            Target::AtMost(t) => format!("<= {t} {}", self.unit),
            Target::DeltaAtMost(t) => format!("<= floor + {t} {}", self.unit),
        }
    }
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `load_before`: /proc/loadavg when the run started (the machine is shared: say how busy).
pub fn markdown(rows: &[Row], quick: bool, took: Duration, load_before: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "<!-- written by `cargo xtask bench`{} -->\n| section | case | value | baseline | vs baseline | target | met |\n|---|---|---|---|---|---|---|\n",
        if quick { " --quick (smoke sizes: not representative)" } else { "" }
    ));
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |\n",
            r.section,
            r.case,
            fmt(r.value),
            r.unit,
            r.baseline.map(fmt).unwrap_or_default(),
            match (r.ratio, r.baseline) {
                // Three decimals: 0.948 must not print as a passing-looking 0.95.
                (Some(x), _) if x < 10.0 => format!("{x:.3}x"),
                (Some(x), _) => format!("{}x", fmt(x)),
                // Against a floor (lower is better): what the subject adds.
                (None, Some(b)) => format!("+{} {}", fmt(r.value - b), r.unit),
                (None, None) => String::new(),
            },
            r.target_text(),
            match r.met() {
                None => "",
                Some(true) => "yes",
                Some(false) => "**no**",
            }
        ));
    }
    let load = loadavg();
    s.push_str(&format!(
        "\nMedians over rounds; every baseline is measured in the same rounds as its subject, \
         interleaved (datapath ratios: the median of the per-round ratios). \
         Took {:.0} s; load average (1, 5, 15 min) before {load_before}, after {load} \
         (the bench itself loads one to two CPUs); kernel {}; {} CPUs.\n",
        took.as_secs_f64(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    ));
    s
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

pub fn json(rows: &[Row]) -> Result<String> {
    let v: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "section": r.section, "case": r.case, "value": r.value, "unit": r.unit,
                "baseline": r.baseline, "ratio": r.ratio, "target": r.target_text(), "met": r.met(),
            })
        })
        .collect();
    Ok(serde_json::to_string_pretty(&v)?)
}

/// This thread's CPU time (ns): the kernel work it does in its own context (syscalls, and the
/// softirqs its transmits raise) counts, time it waits or is preempted does not.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Loads `enipin_noop` (`r0 = -1; exit`) from enipin's object, its (unused) maps pinned under
/// `pin_dir`, a private bpffs: the empty classifier the datapath and attach floors are measured
/// with. Call it inside the namespace it will be attached in.
pub fn noop(pin_dir: &std::path::Path) -> Result<aya::Ebpf> {
    let mut bpf = aya::EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(enipin::datapath::OBJECT)?;
    let prog: &mut aya::programs::SchedClassifier = bpf
        .program_mut(enipin_ebpf::NOOP_PROGRAM)
        .context("no noop program")?
        .try_into()?;
    prog.load()?;
    Ok(bpf)
}

/// A finished child: its output, wall time and peak resident set size.
pub struct Run {
    pub output: Output,
    pub wall_ms: f64,
    pub max_rss_kib: i64,
}

impl Run {
    pub fn ok(self) -> Result<Self> {
        if !self.output.status.success() {
            bail!(
                "failed ({}): {}",
                self.output.status,
                String::from_utf8_lossy(&self.output.stderr).trim()
            );
        }
        Ok(self)
    }
}

/// Runs `cmd` to completion and reads its own rusage (wait4), not the sum of all children.
pub fn run_measured(cmd: &mut Command) -> Result<Run> {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let Child { stdout, stderr, .. } = child;
    let read = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(stdout.map(|p| Box::new(p) as _));
    let err = read(stderr.map(|p| Box::new(p) as _));
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; the pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    Ok(Run {
        output,
        wall_ms,
        max_rss_kib: usage.ru_maxrss,
    })
}

/// Kills and reaps a background child (an iperf3 server) when dropped.
pub struct KillOnDrop<'a>(pub &'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
