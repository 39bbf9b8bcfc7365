//! Timing one program run the way libvirt runs a hook: spawn, feed stdin, wait for exit.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A program with its arguments and environment.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
}

impl Program {
    pub fn new(path: &Path) -> Program {
        Program {
            path: path.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Program {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Program {
        self.env.push((k.to_string(), v.into()));
        self
    }

    /// Run once with `stdin`; milliseconds from spawn to exit (wall) and of CPU (user + system,
    /// of the program and every process it waited for). Panics (the benchmark is wrong, not
    /// slow) when the program fails.
    pub fn time(&self, stdin: &[u8]) -> Sample {
        let cpu_before = children_cpu_ms();
        let start = Instant::now();
        let mut child = Command::new(&self.path)
            .args(&self.args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.path.display()));
        let mut input = child.stdin.take().unwrap();
        // A program may exit without reading stdin (libvirt copes, so do we).
        let _ = input.write_all(stdin);
        drop(input);
        let out = child.wait_with_output().unwrap();
        let wall = start.elapsed().as_secs_f64() * 1000.0;
        let cpu = children_cpu_ms() - cpu_before;
        if !out.status.success() {
            panic!(
                "{} {:?} failed ({}): {}",
                self.path.display(),
                self.args,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Sample { wall, cpu }
    }
}

/// One run: wall-clock and CPU milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub wall: f64,
    pub cpu: f64,
}

impl std::ops::Add for Sample {
    type Output = Sample;
    fn add(self, o: Sample) -> Sample {
        Sample {
            wall: self.wall + o.wall,
            cpu: self.cpu + o.cpu,
        }
    }
}

impl std::iter::Sum for Sample {
    fn sum<I: Iterator<Item = Sample>>(iter: I) -> Sample {
        iter.fold(Sample::default(), |a, b| a + b)
    }
}

/// CPU time of every child this process has waited for, in milliseconds. On a loaded machine
/// (this one is shared) wall time includes waiting for a CPU; CPU time does not.
fn children_cpu_ms() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Summary of a series of times, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stats(samples: &[f64]) -> Stats {
    assert!(!samples.is_empty(), "no samples");
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Nearest rank.
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        n: v.len(),
        median: rank(0.5),
        p99: rank(0.99),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Named series collected side by side.
#[derive(Default)]
pub struct Series(pub BTreeMap<String, Vec<Sample>>);

/// Wall and CPU statistics of one series.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Both {
    pub wall: Stats,
    pub cpu: Stats,
}

pub fn both(samples: &[Sample]) -> Both {
    let wall: Vec<f64> = samples.iter().map(|s| s.wall).collect();
    let cpu: Vec<f64> = samples.iter().map(|s| s.cpu).collect();
    Both {
        wall: stats(&wall),
        cpu: stats(&cpu),
    }
}

impl Series {
    pub fn push(&mut self, name: &str, s: Sample) {
        self.0.entry(name.to_string()).or_default().push(s);
    }

    pub fn summary(&self) -> BTreeMap<String, Both> {
        self.0.iter().map(|(k, v)| (k.clone(), both(v))).collect()
    }
}
