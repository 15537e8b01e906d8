//! The main loop every plugin binary runs: read the environment and stdin, apply the
//! reference skel's validation and version gates, dispatch the verb, print the result or the
//! error JSON, and turn a panic into a code-999 error instead of a crash.

use std::io::Read;
use std::os::unix::fs::MetadataExt;

use serde_json::Value;

use crate::env::{valid_id, Command, Env, Getenv, ProcessEnv};
use crate::error::{CniError, Code};
use crate::types::CniResult;
use crate::{json, result, version};

/// One parsed plugin call.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: Env,
    pub command: Command,
    /// The exact stdin bytes, handed unchanged to delegated plugins.
    pub stdin: Vec<u8>,
    /// The config with every object key folded to lower case (see [`json`]).
    pub conf: Value,
    pub cni_version: String,
    pub name: String,
}

impl Request {
    /// Decodes the whole config into a plugin's typed struct (lower-case field names).
    pub fn decode<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, CniError> {
        json::decode(&self.conf, what)
    }

    /// `prevResult`, converted to the 1.x model, if present.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match json::get(&self.conf, "prevResult") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => result::parse(v, &self.cni_version)
                .map(Some)
                .map_err(|e| e.context("failed to parse prevResult")),
        }
    }

    /// `runtimeConfig.<key>` (folded), if present.
    pub fn runtime_config(&self, key: &str) -> Option<&Value> {
        json::get(&self.conf, "runtimeConfig")
            .and_then(|rc| json::get(rc, key))
            .filter(|v| !v.is_null())
    }

    /// `args.cni.<key>` (folded), if present.
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        json::get(&self.conf, "args")
            .and_then(|a| json::get(a, "cni"))
            .and_then(|c| json::get(c, key))
            .filter(|v| !v.is_null())
    }
}

/// What a plugin implements. ADD returns the 1.x model; the skel prints it in the config's
/// version.
pub trait Plugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    fn del(&self, req: &Request) -> Result<(), CniError>;
    fn check(&self, req: &Request) -> Result<(), CniError>;
    fn gc(&self, req: &Request) -> Result<(), CniError>;
    fn status(&self, req: &Request) -> Result<(), CniError>;
    /// The spec versions the plugin speaks (VERSION, the about text and the version gate).
    /// Every version by default; the reference `firewall` starts at 0.4.0.
    fn versions(&self) -> &'static [&'static str] {
        version::SUPPORTED
    }
}

/// A plugin whose verbs are plain functions, e.g. each in a module of its own (bridge, tuning).
pub struct Verbs {
    pub add: fn(&Request) -> Result<CniResult, CniError>,
    pub del: fn(&Request) -> Result<(), CniError>,
    pub check: fn(&Request) -> Result<(), CniError>,
    pub gc: fn(&Request) -> Result<(), CniError>,
    pub status: fn(&Request) -> Result<(), CniError>,
}

impl Plugin for Verbs {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        (self.add)(req)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        (self.del)(req)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        (self.check)(req)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        (self.gc)(req)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        (self.status)(req)
    }
}

/// The verb of a plugin that has nothing to do for it: succeeds.
pub fn nothing(_: &Request) -> Result<(), CniError> {
    Ok(())
}

/// What one call printed, and its exit status.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

fn fail(e: &CniError, version: Option<&str>) -> Outcome {
    Outcome {
        stdout: e.to_json(version),
        stderr: String::new(),
        code: 1,
    }
}

/// The about text printed when CNI_COMMAND is unset.
pub fn about(plugin_name: &str) -> String {
    about_with(plugin_name, version::SUPPORTED)
}

fn about_with(plugin_name: &str, versions: &[&str]) -> String {
    format!(
        "CNI {plugin_name} plugin v{}\nCNI protocol versions supported: {}\n",
        env!("CARGO_PKG_VERSION"),
        versions.join(", ")
    )
}

/// The most stdin a call reads. The largest honest input is a GC's
/// `cni.dev/valid-attachments`, one `{"containerID":"<64 hex>","ifname":"..."}` (~110 bytes) per
/// attachment on the node: 8 MiB holds ~75,000 of them, beyond any node's container count,
/// while ADD's config with a prevResult and runtimeConfig is a few KiB. Anything larger is a bug
/// or an attack, and reading it whole would cost ~3x its size in memory before failing.
pub const MAX_STDIN: usize = 8 << 20;

/// Runs one call against explicit inputs (the testable core of [`run`]).
pub fn dispatch<P: Plugin>(
    plugin: &P,
    plugin_name: &str,
    getenv: &dyn Getenv,
    stdin: &mut dyn Read,
) -> Outcome {
    if getenv.get("CNI_COMMAND").is_empty() {
        return Outcome {
            stderr: about_with(plugin_name, plugin.versions()),
            ..Default::default()
        };
    }
    let env = match Env::load(getenv) {
        Ok(env) => env,
        Err(e) => return fail(&e, None),
    };
    if env.command == Some(Command::Version) {
        return Outcome {
            stdout: version::version_reply_for(plugin.versions()),
            ..Default::default()
        };
    }
    let mut bytes = Vec::new();
    if let Err(e) = stdin.take(MAX_STDIN as u64 + 1).read_to_end(&mut bytes) {
        let e = CniError::new(Code::Io, format!("error reading from stdin: {e}"));
        return fail(&e, None);
    }
    if bytes.len() > MAX_STDIN {
        // Refused before parsing, and without reading the rest: a runaway writer costs us at
        // most the cap in memory, and the runtime sees EPIPE, which libcni ignores.
        let e = CniError::new(
            Code::InvalidConfig,
            format!(
                "network configuration on stdin is larger than the {} MiB limit",
                MAX_STDIN >> 20
            ),
        )
        .with_details("no runtime sends configs this large: check what generates it");
        return fail(&e, None);
    }
    let req = match build_request(env, bytes, plugin.versions()) {
        Ok(r) => r,
        Err((e, v)) => return fail(&e, v.as_deref()),
    };
    let v = req.cni_version.clone();
    match call(plugin, &req) {
        Ok(out) => Outcome {
            stdout: out,
            ..Default::default()
        },
        Err(e) => fail(&e, Some(&v)),
    }
}

type BuildError = (CniError, Option<String>);

fn build_request(env: Env, stdin: Vec<u8>, versions: &[&str]) -> Result<Request, BuildError> {
    let raw = json::parse(&stdin).map_err(|e| (e, None))?;
    let conf = json::fold_keys(&raw);
    let decode_err = |m: String| (CniError::new(Code::Decoding, m), None);
    let name = match json::get(&conf, "name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(decode_err(
                "error unmarshall network config: key \"name\" must be a string".into(),
            ))
        }
    };
    if name.is_empty() {
        return Err((CniError::config("missing network name"), None));
    }
    if !valid_id(&name) {
        return Err((
            CniError::config("invalid characters found in network name").with_details(name),
            None,
        ));
    }
    let Some(command) = env.command else {
        let e = CniError::new(
            Code::InvalidEnv,
            format!("unknown CNI_COMMAND: {}", env.command_raw),
        );
        return Err((e, None));
    };
    let cni_version = match json::get(&conf, "cniVersion") {
        None | Some(Value::Null) => "0.1.0".to_string(),
        Some(Value::String(s)) if s.is_empty() => "0.1.0".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(decode_err("key \"cniVersion\" must be a string".into())),
    };
    let gate = match command {
        Command::Check => version::check_verb_allowed(&cni_version, "CHECK", "0.4.0"),
        Command::Gc => version::check_verb_allowed(&cni_version, "GC", "1.1.0"),
        Command::Status => version::check_verb_allowed(&cni_version, "STATUS", "1.1.0"),
        _ => Ok(()),
    }
    .and_then(|_| version::check_supported_in(versions, &cni_version));
    if let Err(e) = gate {
        return Err((e, Some(cni_version)));
    }
    Ok(Request {
        env,
        command,
        stdin,
        conf,
        cni_version,
        name,
    })
}

/// A plugin that configured its own netns would break the host; refuse before acting
/// (the reference checks only after the damage is done).
fn check_netns_not_own(env: &Env) -> Result<(), CniError> {
    if env.netns.is_empty() || env.netns_override {
        return Ok(());
    }
    let (Ok(theirs), Ok(ours)) = (
        std::fs::metadata(&env.netns),
        std::fs::metadata("/proc/self/ns/net"),
    ) else {
        return Ok(()); // a missing netns is the plugin's to report (or ignore on DEL)
    };
    if theirs.dev() == ours.dev() && theirs.ino() == ours.ino() {
        return Err(CniError::new(
            Code::InvalidNetns,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        )
        .with_details(format!(
            "CNI_NETNS={} is the plugin's own network namespace; pass the container's",
            env.netns
        )));
    }
    Ok(())
}

fn call<P: Plugin>(plugin: &P, req: &Request) -> Result<String, CniError> {
    match req.command {
        Command::Add => {
            check_netns_not_own(&req.env)?;
            let r = plugin.add(req)?;
            result::print(&r, &req.cni_version)
        }
        Command::Del => {
            check_netns_not_own(&req.env)?;
            plugin.del(req).map(|_| String::new())
        }
        Command::Check => plugin.check(req).map(|_| String::new()),
        Command::Gc => plugin.gc(req).map(|_| String::new()),
        Command::Status => plugin.status(req).map(|_| String::new()),
        Command::Version => Ok(version::version_reply_for(plugin.versions())),
    }
}

/// The C `main` of a plugin binary whose crate root says `#![cfg_attr(not(test), no_main)]`:
/// the C library calls it directly, skipping std's start-up. That start-up (stack-guard
/// discovery through /proc/self/maps, an alternate signal stack, ...) costs ~0.1 ms of CPU
/// here, paid on every CNI call. What of it a plugin needs, [`start`] does. No plugin reads
/// its arguments (CNI passes everything in the environment and on stdin): with musl
/// `std::env::args` is empty here. [`run`] leaves through `process::exit`, which flushes
/// stdout. Also installs the plugins' allocator ([`crate::arena`]).
#[macro_export]
macro_rules! plugin_main {
    ($plugin:expr, $name:expr) => {
        // SAFETY: `no_main` removes std's `main`, so this is the only symbol of that name in
        // the binary; the C runtime calls it once, and the arguments are not touched.
        #[cfg(not(test))]
        #[no_mangle]
        pub extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::skel::start();
            $crate::skel::run(&$plugin, $name)
        }
        // One process per call: a bump allocator (see `cni_core::arena`).
        #[cfg(not(test))]
        #[global_allocator]
        static ALLOC: $crate::arena::Arena = $crate::arena::Arena::global();
        // Under the test harness (`no_main` is off there), an ordinary `main` that the
        // harness replaces: keeps the plugin referenced.
        #[cfg(test)]
        fn main() {
            $crate::skel::run(&$plugin, $name)
        }
    };
}

/// The part of std's start-up a plugin relies on: a write to a closed pipe is an error
/// (EPIPE), not a silent death by SIGPIPE; and fds 0-2 are open (a runtime that closed one
/// would otherwise see our first socket become "stdout").
pub fn start() {
    // SAFETY: plain libc calls on this process's own signal disposition and fds 0-2; `fds`
    // is a valid array of 3 pollfds for the duration of the call.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        if libc::poll(fds.as_mut_ptr(), 3, 0) >= 0 {
            for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
                let mode = if p.fd == 0 {
                    libc::O_RDONLY
                } else {
                    libc::O_WRONLY
                };
                // Opened lowest-first, so it lands on the closed fd.
                libc::open(c"/dev/null".as_ptr(), mode);
            }
        }
    }
}

/// The plugin binary's `main`: runs one call against the process environment and exits.
pub fn run<P: Plugin + std::panic::RefUnwindSafe>(plugin: &P, plugin_name: &str) -> ! {
    use std::io::Write;
    let outcome = std::panic::catch_unwind(|| {
        dispatch(
            plugin,
            plugin_name,
            &ProcessEnv,
            &mut std::io::stdin().lock(),
        )
    })
    .unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        fail(
            &CniError::internal(format!("{plugin_name} plugin bug (please report): {what}")),
            None,
        )
    });
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    std::process::exit(outcome.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ECHO: Verbs = Verbs {
        add: |req| {
            Ok(CniResult {
                ips: vec![crate::types::IpConfig {
                    interface: None,
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                }],
                cni_version: req.cni_version.clone(),
                ..Default::default()
            })
        },
        del: nothing,
        check: nothing,
        gc: |_| Err(CniError::internal("gc called")),
        status: nothing,
    };

    fn run_with(env: &[(&str, &str)], stdin: &str) -> Outcome {
        let m: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let g = move |k: &str| m.get(k).cloned();
        dispatch(&ECHO, "echo", &g, &mut stdin.as_bytes())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/nonexistent/netns"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn err_of(o: &Outcome) -> (u64, String) {
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        (
            v["code"].as_u64().unwrap(),
            v["msg"].as_str().unwrap().into(),
        )
    }

    #[test]
    fn about_without_command() {
        let o = run_with(&[], "");
        assert_eq!(o.code, 0);
        assert!(o.stderr.contains("CNI protocol versions supported: 0.1.0"));
        assert!(o.stdout.is_empty());
    }

    #[test]
    fn version_ignores_stdin() {
        let o = run_with(&[("CNI_COMMAND", "VERSION")], "garbage");
        assert_eq!(o.code, 0);
        assert!(o.stdout.contains("\"1.1.0\""));
    }

    #[test]
    fn add_prints_in_config_version() {
        let o = run_with(ADD, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(o.code, 0, "{}", o.stdout);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        let o = run_with(ADD, r#"{"name":"n"}"#);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.1.0");
        assert_eq!(v["ip4"]["ip"], "10.0.0.2/24");
    }

    #[test]
    fn stdin_errors() {
        assert_eq!(err_of(&run_with(ADD, "")).0, 6);
        assert_eq!(err_of(&run_with(ADD, "{")).0, 6);
        assert_eq!(
            err_of(&run_with(ADD, r#"{"cniVersion":"1.0.0"}"#)),
            (7, "missing network name".into())
        );
        assert_eq!(
            err_of(&run_with(ADD, r#"{"name":"a b"}"#)),
            (7, "invalid characters found in network name".into())
        );
        let o = run_with(ADD, r#"{"cniVersion":"9.9.9","name":"n"}"#);
        assert_eq!(err_of(&o), (1, "incompatible CNI versions".into()));
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "9.9.9");
    }

    #[test]
    fn stdin_over_the_cap_is_refused_without_parsing() {
        // Valid JSON padded past the cap: refused for its size, not parsed.
        let pad = " ".repeat(MAX_STDIN);
        let big = format!(r#"{{"cniVersion":"1.0.0","name":"n"}}{pad}"#);
        let (code, msg) = err_of(&run_with(ADD, &big));
        assert_eq!(code, 7);
        assert!(msg.contains("8 MiB limit"), "{msg}");
        // Exactly at the cap is still accepted.
        let head = r#"{"cniVersion":"1.0.0","name":"n"}"#;
        let ok = format!("{head}{}", " ".repeat(MAX_STDIN - head.len()));
        assert_eq!(ok.len(), MAX_STDIN);
        assert_eq!(run_with(ADD, &ok).code, 0);
    }

    #[test]
    fn gates_and_unknown_command() {
        let o = run_with(
            &[("CNI_COMMAND", "FOO"), ("CNI_PATH", "/x")],
            r#"{"name":"n","cniVersion":"1.0.0"}"#,
        );
        assert_eq!(err_of(&o), (4, "unknown CNI_COMMAND: FOO".into()));
        let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")];
        let o = run_with(&gc, r#"{"name":"n","cniVersion":"1.0.0"}"#);
        assert_eq!(err_of(&o), (1, "config version does not allow GC".into()));
        let o = run_with(&gc, r#"{"name":"n","cniVersion":"1.1.0"}"#);
        assert_eq!(err_of(&o), (999, "gc called".into()));
    }

    #[test]
    fn own_netns_refused() {
        let mut env = ADD.to_vec();
        env[2] = ("CNI_NETNS", "/proc/self/ns/net");
        let o = run_with(&env, r#"{"name":"n","cniVersion":"1.0.0"}"#);
        assert_eq!(err_of(&o).0, 8);
        env.push(("CNI_NETNS_OVERRIDE", "1"));
        assert_eq!(
            run_with(&env, r#"{"name":"n","cniVersion":"1.0.0"}"#).code,
            0
        );
    }
}
