//! What the benchmark binaries (`src/bin/cni-bench-*`) share: the command line (usage errors
//! exit 2) and the figures.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn median_is_the_upper_middle() {
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.95), 3.0);
    }
}
