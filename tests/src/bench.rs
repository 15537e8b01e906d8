//! What the benchmark binaries (`src/bin/cni-bench-*`) share: the command line (usage errors
//! exit 2) and the figures.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{run, Call, Netns, PluginDir, Reply, TempDir};

/// A bench's name and synopsis, for its usage errors.
pub struct Cli {
    pub prog: &'static str,
    pub synopsis: &'static str,
}

impl Cli {
    /// Prints `msg` and the usage line, exits 2.
    pub fn usage(&self, msg: &str) -> ! {
        eprintln!("{}: {msg}", self.prog);
        eprintln!("usage: {} {}", self.prog, self.synopsis);
        std::process::exit(2)
    }

    /// Walks the command line: `flag(name, value)` for each argument, where `value()` takes
    /// the next argument (a usage error when there is none); `flag` returns false for an
    /// argument it does not know (a usage error).
    pub fn parse(&self, mut flag: impl FnMut(&str, &mut dyn FnMut() -> String) -> bool) {
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut val = || {
                args.next()
                    .unwrap_or_else(|| self.usage(&format!("{a} needs a value")))
            };
            if !flag(&a, &mut val) {
                self.usage(&format!("unknown argument {a}"));
            }
        }
    }

    /// `v` as a number; a usage error "bad <what>" otherwise.
    pub fn num<T: FromStr>(&self, v: String, what: &str) -> T {
        v.parse()
            .unwrap_or_else(|_| self.usage(&format!("bad {what}")))
    }
}

/// The two implementations a bench compares: `--ours` (default: the directory of the running
/// executable) and `--reference` (default: the installed Go plugins).
pub struct Impls {
    pub ours: PathBuf,
    pub reference: PathBuf,
}

impl Default for Impls {
    fn default() -> Self {
        Impls {
            ours: crate::bin_dir(),
            reference: PathBuf::from(crate::REFERENCE_DIR),
        }
    }
}

impl Impls {
    /// Takes `--ours DIR` and `--reference DIR`; false for any other flag.
    pub fn flag(&mut self, name: &str, val: &mut dyn FnMut() -> String) -> bool {
        match name {
            "--ours" => self.ours = val().into(),
            "--reference" => self.reference = val().into(),
            _ => return false,
        }
        true
    }
}

/// One implementation's world: a host netns, a CNI_PATH holding copies of the
/// implementation's plugins (see [`PluginDir::copies`]), and a host-local dataDir.
pub struct World {
    pub host: Netns,
    pub data: TempDir,
    pub cni: PluginDir,
    /// Where the copies are (the CNI_PATH): the plugins run from here.
    pub dir: PathBuf,
}

impl World {
    /// `plugins` of `dir` (a usage error when one is missing); names start with `prefix`.
    pub fn new(cli: &Cli, dir: &Path, plugins: &[&str], prefix: &str) -> World {
        let links: Vec<(&str, PathBuf)> = plugins.iter().map(|p| (*p, dir.join(p))).collect();
        for (_, p) in &links {
            if !p.exists() {
                cli.usage(&format!("{} not found", p.display()));
            }
        }
        let links: Vec<(&str, &Path)> = links.iter().map(|(n, p)| (*n, p.as_path())).collect();
        let cni = PluginDir::copies(&links);
        World {
            host: Netns::new(&format!("{prefix}h")),
            data: TempDir::new(&format!("{prefix}data")),
            dir: PathBuf::from(cni.path()),
            cni,
        }
    }

    /// Runs `f` on a thread that lives in this world's host netns, as a runtime does: its
    /// calls spawn plugins directly (see [`crate::stay_in_netns`]).
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let host = std::fs::File::open(&self.host.path).expect("open host netns");
        std::thread::scope(|s| {
            s.spawn(move || {
                crate::stay_in_netns(&host);
                f()
            })
            .join()
            .expect("bench thread panicked")
        })
    }

    /// A bridge network `name` on bridge `bridge` with ipMasq and host-local in 10.88.0.0/16,
    /// at cniVersion 1.0.0 (the newest the reference plugins speak).
    pub fn bridge_conf(&self, name: &str, bridge: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "dataDir": self.data.str(),
                "ranges": [[{"subnet": "10.88.0.0/16"}]]
            }
        })
    }

    /// Runs `plugin` for container `id` in `netns` as a runtime on the host would; how long
    /// it took.
    pub fn call(
        &self,
        plugin: &str,
        cmd: &str,
        netns: &str,
        id: &str,
        conf: &Value,
    ) -> (Duration, Reply) {
        let path = self.dir.join(plugin);
        let call = Call::in_host(&path, cmd, &self.host, self.cni.path(), netns, id);
        let stdin = conf.to_string();
        let t = Instant::now();
        let r = run(&call, &stdin);
        (t.elapsed(), r)
    }
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1, nearest rank) of sorted figures; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `p` quantile of figures in any order (see [`percentile`]).
pub fn quantile(figures: &[f64], p: f64) -> f64 {
    let mut sorted = figures.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, p)
}

/// The machine's load averages over 1, 5 and 15 minutes, as `/proc/loadavg` has them: a busy
/// machine explains slow figures.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The figures of one bench in machine-readable form, written as JSON to the file named by the
/// `BENCH_JSON` environment variable (nothing when unset): `{"bench", "params", "rows"}`, one
/// row per figure with ours, the peer's (when there is one) and which direction is better.
/// `scripts/bench-report.sh` merges these files into `bench/results.json`.
pub struct Report {
    bench: &'static str,
    params: serde_json::Value,
    rows: Vec<serde_json::Value>,
}

/// Whether a smaller or a larger figure is better.
#[derive(Clone, Copy)]
pub enum Better {
    Lower,
    Higher,
}

impl Report {
    pub fn new(bench: &'static str, params: serde_json::Value) -> Report {
        Report {
            bench,
            params,
            rows: Vec::new(),
        }
    }

    /// One figure: `group` (a chart panel, e.g. "bridge"), `metric` (e.g. "ADD p50"), its unit,
    /// ours, and the peer's figure with the peer's name (`None` when there is no peer).
    pub fn row(
        &mut self,
        group: &str,
        metric: &str,
        unit: &str,
        better: Better,
        ours: f64,
        peer: Option<(&str, f64)>,
    ) {
        let num = |x: f64| {
            if x.is_finite() {
                serde_json::json!(x)
            } else {
                serde_json::Value::Null
            }
        };
        self.rows.push(serde_json::json!({
            "group": group,
            "metric": metric,
            "unit": unit,
            "better": match better { Better::Lower => "lower", Better::Higher => "higher" },
            "ours": num(ours),
            "peer": peer.map(|(_, v)| num(v)).unwrap_or(serde_json::Value::Null),
            "peer_name": peer.map(|(n, _)| n),
        }));
    }

    /// The report as JSON (also embedded by benches that write their own file).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"bench": self.bench, "params": self.params, "rows": self.rows})
    }

    /// Writes the report to `$BENCH_JSON`, if set; a write failure is fatal (the caller asked
    /// for the file).
    pub fn write(&self) {
        let Some(path) = std::env::var_os("BENCH_JSON") else {
            return;
        };
        let text = serde_json::to_string_pretty(&self.to_json()).expect("json") + "\n";
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("{}: write BENCH_JSON {path:?}: {e}", self.bench);
            std::process::exit(1);
        }
        eprintln!(
            "{}: figures written to {}",
            self.bench,
            PathBuf::from(path).display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{percentile, quantile};

    #[test]
    fn median_is_the_upper_middle() {
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.95), 3.0);
        assert_eq!(quantile(&[3.0, 1.0, 4.0, 2.0], 0.5), 3.0);
    }
}
