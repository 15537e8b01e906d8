//! A test runtime that calls plugins exactly as libcni 1.3 (`libcni/api.go`) does: the same
//! stdin bytes (name/cniVersion/prevResult/runtimeConfig injection through `InjectConf`), the
//! same CNI_* environment (inherited environment plus the CNI variables), the same result cache
//! (`<cacheDir>/results/<network>-<containerID>-<ifname>`, kind `cniCacheV1`), and the same
//! verb semantics (ADD in order with prevResult chaining, DEL in reverse with the cached result
//! from 0.4.0, CHECK from 0.4.0, GC with stale cached attachments deleted first, STATUS from
//! 1.1.0, VERSION). Plugins can run inside a throwaway "host" netns.

pub mod conf;
pub mod cri;
pub mod gojson;
pub mod version;

use std::fs::File;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub use conf::{
    conf_from_file, conf_list_from_bytes, conf_list_from_conf, conf_list_from_file, inject_conf,
    load_file, load_network_conf, plugin_conf_from_bytes, NetworkConfigList, PluginConfig,
};
use gojson::{as_go_map, base64_decode, base64_encode, marshal};
use version::at_least;

/// libcni's `CNICacheV1`.
pub const CACHE_KIND: &str = "cniCacheV1";

/// The arguments of one attachment (libcni's `RuntimeConf`).
#[derive(Clone, Debug, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS pairs, joined as `K=V;K=V`.
    pub args: Vec<(String, String)>,
    /// Capability data; only keys a plugin declares in `capabilities` reach it.
    pub capability_args: Map<String, Value>,
}

/// A still-valid attachment for GC (`types.GCAttachment`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// libcni's `*GCArgs` as a caller can pass it.
#[derive(Clone, Copy, Debug)]
pub enum GcArgs<'a> {
    /// `args == nil` (what cnitool's `gc` passes): nothing is valid, and the GC config has no
    /// `cni.dev/valid-attachments` key.
    Nil,
    /// `&GCArgs{}` (a nil `ValidAttachments`): nothing is valid; the key is sent as `null`.
    NilList,
    /// `&GCArgs{ValidAttachments: list}`: the list is sent as it is (`[]` when empty).
    List(&'a [GcAttachment]),
}

/// An attachment found in the cache (`NetworkAttachment`).
#[derive(Clone, Debug)]
pub struct NetworkAttachment {
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    pub config: Vec<u8>,
    pub netns: String,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
}

/// A failure, with the CNI error code when a plugin reported one (0 otherwise) and libcni's
/// message text.
#[derive(Clone, Debug)]
pub struct Error {
    pub code: u64,
    pub msg: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl Error {
    fn new(msg: impl Into<String>) -> Error {
        Error {
            code: 0,
            msg: msg.into(),
        }
    }
    fn context(self, prefix: &str) -> Error {
        Error {
            code: self.code,
            msg: format!("{prefix}: {}", self.msg),
        }
    }
}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error::new(s)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One plugin execution, recorded for assertions.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub plugin: PathBuf,
    pub command: String,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

impl Invocation {
    pub fn stdin_json(&self) -> Value {
        serde_json::from_slice(&self.stdin).unwrap_or(Value::Null)
    }
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A planned `kill -9` of one plugin execution (fault injection).
#[derive(Clone, Copy, Debug)]
pub struct KillPlan {
    /// Time after the spawn at which the plugin gets SIGKILL (if it is still running).
    pub delay: Duration,
    /// Kill the plugin's whole process group (with the IPAM plugin it runs), not only it.
    pub group: bool,
}

/// Fault injection into a [`Cni`]: asked before every plugin execution whether to kill it, and
/// told how every execution ended, so a test can kill plugins mid-call like a crash or a
/// runtime's timeout would.
pub trait Faults: Send + Sync {
    /// `Some` to SIGKILL this execution of `plugin` (its CNI_PATH name) for `command`.
    fn plan(&self, plugin: &str, command: &str) -> Option<KillPlan>;
    /// Every execution's wall time from spawn to exit, and whether a planned kill hit it
    /// while it was still running (false when it was not planned or the plugin had exited).
    fn done(&self, plugin: &str, command: &str, took: Duration, killed_mid_call: bool);
}

/// libcni's `CNIConfig`.
pub struct Cni {
    pub path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// Run plugins inside this network namespace (a throwaway "host"); None: the caller's.
    pub host_netns: Option<PathBuf>,
    /// Fault injection (see [`Faults`]); None: plugins run undisturbed.
    pub faults: Option<Arc<dyn Faults>>,
    /// The call log, when [`Cni::recording`] asked for one. Off by default: each entry holds
    /// the whole environment and stdin (~10 KB), which a long run must not accumulate.
    calls: Option<Mutex<Vec<Invocation>>>,
}

impl Cni {
    pub fn new(path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Cni {
        Cni {
            path,
            cache_dir: cache_dir.into(),
            host_netns: None,
            faults: None,
            calls: None,
        }
    }

    /// Keeps a log of every plugin execution, read with [`Cni::calls`].
    pub fn recording(mut self) -> Cni {
        self.calls = Some(Mutex::new(Vec::new()));
        self
    }

    pub fn with_faults(mut self, faults: Arc<dyn Faults>) -> Cni {
        self.faults = Some(faults);
        self
    }

    pub fn in_netns(mut self, netns: impl Into<PathBuf>) -> Cni {
        self.host_netns = Some(netns.into());
        self
    }

    /// Every plugin execution so far (panics unless built with [`Cni::recording`]).
    pub fn calls(&self) -> Vec<Invocation> {
        self.calls
            .as_ref()
            .expect("no call log: build the Cni with .recording()")
            .lock()
            .expect("calls lock")
            .clone()
    }

    /// `FindInPath`.
    pub fn find_in_path(&self, plugin: &str) -> Result<PathBuf> {
        if plugin.is_empty() {
            return Err(Error::new("no plugin name provided"));
        }
        if plugin.contains('/') {
            return Err(Error::new(format!("invalid plugin name: {plugin}")));
        }
        if self.path.is_empty() {
            return Err(Error::new("no paths provided"));
        }
        for dir in &self.path {
            let p = dir.join(plugin);
            if std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
                return Ok(p);
            }
        }
        let paths: Vec<String> = self.path.iter().map(|p| p.display().to_string()).collect();
        Err(Error::new(format!(
            "failed to find plugin {plugin:?} in path [{}]",
            paths.join(" ")
        )))
    }

    fn path_env(&self) -> String {
        let v: Vec<String> = self.path.iter().map(|p| p.display().to_string()).collect();
        v.join(":")
    }

    /// `invoke.Args.AsEnv` + `RawExec.ExecPlugin`: the caller's environment with the CNI
    /// variables appended (later wins), retried on "text file busy" like libcni; a failure
    /// is the plugin's error JSON, or libcni's "netplugin failed" text.
    fn exec(&self, plugin: &Path, stdin: &[u8], cni_env: &[(&str, &str)]) -> Result<Vec<u8>> {
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| !cni_env.iter().any(|(c, _)| c == k))
            .collect();
        env.extend(cni_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        if let Some(calls) = &self.calls {
            calls.lock().expect("calls lock").push(Invocation {
                plugin: plugin.to_path_buf(),
                command: cni_env
                    .iter()
                    .find(|(k, _)| *k == "CNI_COMMAND")
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default(),
                env: env.clone(),
                stdin: stdin.to_vec(),
            });
        }
        let host = match &self.host_netns {
            Some(p) => Some(
                File::open(p)
                    .map_err(|e| Error::new(format!("open netns {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let mut attempt = 0;
        let out = loop {
            let mut cmd = Command::new(plugin);
            cmd.env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let name = plugin
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let command = cni_env
                .iter()
                .find(|(k, _)| *k == "CNI_COMMAND")
                .map(|(_, v)| *v)
                .unwrap_or_default();
            let plan = self.faults.as_ref().and_then(|f| f.plan(&name, command));
            if plan.is_some_and(|p| p.group) {
                cmd.process_group(0);
            }
            let started = Instant::now();
            let spawned = match &host {
                Some(f) => crate::spawn_in_netns(&mut cmd, f),
                None => cmd.spawn(),
            };
            match spawned {
                Ok(mut child) => {
                    let mut sin = child.stdin.take().expect("piped stdin");
                    // A plugin that exits without reading stdin is not an error here.
                    let _ = sin.write_all(stdin);
                    drop(sin);
                    if let Some(p) = plan {
                        std::thread::sleep(p.delay.saturating_sub(started.elapsed()));
                        // Still running (not reaped, so the pid cannot have been reused)?
                        if matches!(child.try_wait(), Ok(None)) {
                            let pid = child.id() as libc::pid_t;
                            let target = if p.group { -pid } else { pid };
                            // SAFETY: kill(2) of our own unreaped child (or its process
                            // group, created by `process_group(0)` above).
                            unsafe { libc::kill(target, libc::SIGKILL) };
                        }
                    }
                    let out = child
                        .wait_with_output()
                        .map_err(|e| Error::new(format!("wait {}: {e}", plugin.display())))?;
                    if let Some(f) = &self.faults {
                        let killed = plan.is_some() && out.status.signal() == Some(libc::SIGKILL);
                        f.done(&name, command, started.elapsed(), killed);
                    }
                    break out;
                }
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(Error::new(format!(
                        "netplugin failed with no error message: fork/exec {}: {e}",
                        plugin.display()
                    )))
                }
            }
        };
        if out.status.success() {
            if !out.stderr.is_empty() {
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
            return Ok(out.stdout);
        }
        if out.stdout.is_empty() {
            if out.stderr.is_empty() {
                return Err(Error::new(format!(
                    "netplugin failed with no error message: {}",
                    out.status
                )));
            }
            return Err(Error::new(format!(
                "netplugin failed: {:?}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) => {
                let msg = v["msg"].as_str().unwrap_or("");
                let details = v["details"].as_str().unwrap_or("");
                Err(Error {
                    code: v["code"].as_u64().unwrap_or(0),
                    msg: if details.is_empty() {
                        msg.to_string()
                    } else {
                        format!("{msg}; {details}")
                    },
                })
            }
            Err(e) => Err(Error::new(format!(
                "netplugin failed but error parsing its diagnostic message {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            ))),
        }
    }

    fn exec_verb(
        &self,
        plugin: &Path,
        stdin: &[u8],
        command: &str,
        rt: &RuntimeConf,
    ) -> Result<Vec<u8>> {
        let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let args = args.join(";");
        let path = self.path_env();
        self.exec(
            plugin,
            stdin,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &rt.container_id),
                ("CNI_NETNS", &rt.netns),
                ("CNI_ARGS", &args),
                ("CNI_IFNAME", &rt.ifname),
                ("CNI_PATH", &path),
            ],
        )
    }

    // ---------------------------------------------------------------------------------------
    // The cache.
    // ---------------------------------------------------------------------------------------

    /// `getCacheFilePath`.
    pub fn cache_file(&self, net: &str, rt: &RuntimeConf) -> Result<PathBuf> {
        if net.is_empty() || rt.container_id.is_empty() || rt.ifname.is_empty() {
            return Err(Error::new(format!(
                "cache file path requires network name ({net:?}), container ID ({:?}), and interface name ({:?})",
                rt.container_id, rt.ifname
            )));
        }
        Ok(self
            .cache_dir
            .join("results")
            .join(format!("{net}-{}-{}", rt.container_id, rt.ifname)))
    }

    /// `cacheAdd`: the cachedInfo JSON (config as base64, like Go's `[]byte`), mode 0600.
    fn cache_add(&self, result: &Value, config: &[u8], net: &str, rt: &RuntimeConf) -> Result<()> {
        let mut m = Map::new();
        m.insert("kind".into(), CACHE_KIND.into());
        m.insert("containerId".into(), rt.container_id.clone().into());
        m.insert("config".into(), base64_encode(config).into());
        m.insert("ifName".into(), rt.ifname.clone().into());
        m.insert("networkName".into(), net.into());
        if !rt.netns.is_empty() {
            m.insert("netns".into(), rt.netns.clone().into());
        }
        if !rt.args.is_empty() {
            let a: Vec<Value> = rt.args.iter().map(|(k, v)| json!([k, v])).collect();
            m.insert("cniArgs".into(), Value::Array(a));
        }
        if !rt.capability_args.is_empty() {
            m.insert(
                "capabilityArgs".into(),
                as_go_map(&Value::Object(rt.capability_args.clone())),
            );
        }
        // The result went through map[string]interface{}: sorted keys.
        m.insert("result".into(), as_go_map(result));
        let f = self.cache_file(net, rt)?;
        let dir = f.parent().expect("results dir");
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("mkdir {}: {e}", dir.display())))?;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&f)
            .map_err(|e| Error::new(format!("open {}: {e}", f.display())))?;
        file.write_all(&marshal(&Value::Object(m)))
            .map_err(|e| Error::new(format!("write {}: {e}", f.display())))
    }

    fn cache_del(&self, net: &str, rt: &RuntimeConf) {
        if let Ok(f) = self.cache_file(net, rt) {
            let _ = std::fs::remove_file(f);
        }
    }

    /// `getCachedResult`: the cached result converted to `cni_version`; None when there is no
    /// cache file; a file that is not `cniCacheV1` is read as a bare (legacy) result.
    pub fn cached_result(
        &self,
        net: &str,
        cni_version: &str,
        rt: &RuntimeConf,
    ) -> Result<Option<Value>> {
        let f = self.cache_file(net, rt)?;
        let Ok(data) = std::fs::read(&f) else {
            return Ok(None);
        };
        let v: Option<Value> = serde_json::from_slice(&data).ok();
        let raw = match v {
            Some(v) if v["kind"] == CACHE_KIND => v.get("result").cloned().unwrap_or(Value::Null),
            _ => serde_json::from_slice(&data).map_err(|e| Error::new(e.to_string()))?,
        };
        let r = typed_result(&raw, "")?;
        let converted = convert_result(&r, cni_version).map_err(|e| {
            Error::new(format!(
                "failed to convert cached result to config version {cni_version:?}: {e}"
            ))
        })?;
        Ok(Some(converted))
    }

    /// `getCachedConfig`: the cached config bytes and the RuntimeConf with the cached CNI_ARGS
    /// and capability args.
    pub fn cached_config(
        &self,
        net: &str,
        rt: &RuntimeConf,
    ) -> Result<Option<(Vec<u8>, RuntimeConf)>> {
        let f = self.cache_file(net, rt)?;
        let Ok(data) = std::fs::read(&f) else {
            return Ok(None);
        };
        let v: Value = serde_json::from_slice(&data).map_err(|e| {
            Error::new(format!(
                "failed to unmarshal cached network {net:?} config: {e}"
            ))
        })?;
        if v["kind"] != CACHE_KIND {
            return Err(Error::new(format!(
                "read cached network {net:?} config has wrong kind: {}",
                v["kind"].as_str().unwrap_or("")
            )));
        }
        let a = attachment_from(&v).ok_or_else(|| Error::new("malformed cache entry"))?;
        let mut newrt = rt.clone();
        if v.get("cniArgs").is_some_and(|x| !x.is_null()) {
            newrt.args = a.cni_args;
        }
        newrt.capability_args = a.capability_args;
        Ok(Some((a.config, newrt)))
    }

    /// `GetCachedAttachments(containerID)`: cache entries in file-name order.
    pub fn cached_attachments(&self, container_id: &str) -> Vec<NetworkAttachment> {
        let dir = self.cache_dir.join("results");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if !container_id.is_empty() {
                let part = format!("-{container_id}-");
                match name.find(&part) {
                    Some(pos) if pos > 0 && pos + part.len() < name.len() => {}
                    _ => continue,
                }
            }
            let Ok(data) = std::fs::read(dir.join(&name)) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&data) else {
                continue;
            };
            if v["kind"] != CACHE_KIND {
                continue;
            }
            let Some(a) = attachment_from(&v) else {
                continue;
            };
            if !container_id.is_empty() && a.container_id != container_id {
                continue;
            }
            if a.ifname.is_empty() || a.network.is_empty() {
                continue;
            }
            out.push(a);
        }
        out
    }

    // ---------------------------------------------------------------------------------------
    // Verbs.
    // ---------------------------------------------------------------------------------------

    /// `addNetwork`: one plugin of a list.
    fn add_network(
        &self,
        name: &str,
        cni_version: &str,
        net: &PluginConfig,
        prev: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Result<Value> {
        let plugin = self.find_in_path(&net.type_)?;
        validate_container_id(&rt.container_id)?;
        validate_network_name(name)?;
        validate_interface_name(&rt.ifname)?;
        let conf = build_one_config(name, cni_version, net, prev, Some(rt))?;
        let out = self.exec_verb(&plugin, &conf.bytes, "ADD", rt)?;
        // ExecPluginWithResult: fixupResultVersion, then the typed result of that version.
        let raw: Value = serde_json::from_slice(&out)
            .map_err(|e| Error::new(format!("failed to unmarshal raw result: {e}")))?;
        let conf_version = conf_version_of(&conf.bytes);
        typed_result(&raw, &conf_version)
    }

    /// `AddNetworkList`.
    pub fn add_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<Value> {
        let mut result: Option<Value> = None;
        for net in &list.plugins {
            let r = self
                .add_network(&list.name, &list.cni_version, net, result.as_ref(), rt)
                .map_err(|e| e.context(&format!("plugin {} failed (add)", describe(net))))?;
            result = Some(r);
        }
        let result = result.unwrap_or(Value::Null);
        self.cache_add(&result, &list.bytes, &list.name, rt)
            .map_err(|e| {
                e.context(&format!(
                    "failed to set network {:?} cached result",
                    list.name
                ))
            })?;
        Ok(result)
    }

    /// `CheckNetworkList`.
    pub fn check_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        if !at_least(&list.cni_version, "0.4.0")? {
            return Err(Error::new(format!(
                "configuration version {:?} does not support the CHECK command",
                list.cni_version
            )));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached_result(&list.name, &list.cni_version, rt)
            .map_err(|e| {
                e.context(&format!(
                    "failed to get network {:?} cached result",
                    list.name
                ))
            })?;
        for net in &list.plugins {
            self.exec_without_result(list, net, cached.as_ref(), "CHECK", rt)?;
        }
        Ok(())
    }

    /// `DelNetworkList`: reverse order, the cached result as prevResult from 0.4.0 (an
    /// unreadable cache is dropped, not fatal), the cache entry removed at the end.
    pub fn del_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        let mut cached = None;
        if at_least(&list.cni_version, "0.4.0")? {
            match self.cached_result(&list.name, &list.cni_version, rt) {
                Ok(c) => cached = c,
                Err(_) => self.cache_del(&list.name, rt),
            }
        }
        for net in list.plugins.iter().rev() {
            self.exec_without_result(list, net, cached.as_ref(), "DEL", rt)
                .map_err(|e| e.context(&format!("plugin {} failed (delete)", describe(net))))?;
        }
        self.cache_del(&list.name, rt);
        Ok(())
    }

    /// `checkNetwork` / `delNetwork`: one plugin of a list, the cached result (if any) as
    /// prevResult.
    fn exec_without_result(
        &self,
        list: &NetworkConfigList,
        net: &PluginConfig,
        prev: Option<&Value>,
        command: &str,
        rt: &RuntimeConf,
    ) -> Result<()> {
        let plugin = self.find_in_path(&net.type_)?;
        let conf = build_one_config(&list.name, &list.cni_version, net, prev, Some(rt))?;
        self.exec_verb(&plugin, &conf.bytes, command, rt).map(drop)
    }

    /// `AddNetwork`: a single plugin config (no list), cached under its own name.
    pub fn add_network_single(&self, net: &PluginConfig, rt: &RuntimeConf) -> Result<Value> {
        let r = self.add_network(&net.name, &net.cni_version, net, None, rt)?;
        self.cache_add(&r, &net.bytes, &net.name, rt).map_err(|e| {
            e.context(&format!(
                "failed to set network {:?} cached result",
                net.name
            ))
        })?;
        Ok(r)
    }

    /// `GCNetworkList`: first a DEL (with the cached netns, CNI_ARGS and capability args) of
    /// every cached attachment of this network that `args` does not name valid, then (from
    /// 1.1.0) GC to every plugin with `cni.dev/valid-attachments` (and the old
    /// `cni.dev/attachments`) as [`GcArgs`] shapes them.
    pub fn gc_network_list(&self, list: &NetworkConfigList, args: GcArgs<'_>) -> Result<()> {
        let valid: Option<&[GcAttachment]> = match args {
            GcArgs::Nil => None,
            GcArgs::NilList => Some(&[]),
            GcArgs::List(l) => Some(l),
        };
        if list.disable_gc {
            return Ok(());
        }
        let mut errs = Vec::new();
        for a in self.cached_attachments("") {
            if a.network != list.name {
                continue;
            }
            let is_valid = valid.is_some_and(|v| {
                v.iter()
                    .any(|g| g.container_id == a.container_id && g.ifname == a.ifname)
            });
            if is_valid {
                continue;
            }
            let rt = RuntimeConf {
                container_id: a.container_id.clone(),
                netns: a.netns.clone(),
                ifname: a.ifname.clone(),
                args: a.cni_args.clone(),
                capability_args: a.capability_args.clone(),
            };
            if let Err(e) = self.del_network_list(list, &rt) {
                errs.push(format!(
                    "failed to delete stale attachment {} {}: {e}",
                    rt.container_id, rt.ifname
                ));
            }
        }
        if at_least(&list.cni_version, "1.1.0").unwrap_or(false) {
            let mut inject = vec![
                ("name", Value::from(list.name.clone())),
                ("cniVersion", Value::from(list.cni_version.clone())),
            ];
            let list_json = match args {
                GcArgs::Nil => None,
                // A typed nil slice: the key is sent, as `null`.
                GcArgs::NilList => Some(Value::Null),
                GcArgs::List(v) => Some(Value::Array(
                    v.iter()
                        .map(|g| json!({"containerID": g.container_id, "ifname": g.ifname}))
                        .collect(),
                )),
            };
            if let Some(l) = list_json {
                inject.push(("cni.dev/valid-attachments", l.clone()));
                // libcni #1101: the spec once used this name.
                inject.push(("cni.dev/attachments", l));
            }
            for p in &list.plugins {
                let r = inject_conf(
                    p,
                    &inject,
                    &["cni.dev/valid-attachments", "cni.dev/attachments"],
                )
                .map_err(Error::new)
                .and_then(|c| {
                    let plugin = self.find_in_path(&c.type_)?;
                    self.exec_verb(&plugin, &c.bytes, "GC", &RuntimeConf::default())
                });
                if let Err(e) = r {
                    errs.push(format!("failed to GC plugin {}: {e}", p.type_));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::new(errs.join("\n")))
        }
    }

    /// `GetStatusNetworkList`: nothing before 1.1.0; the first failing plugin's error.
    pub fn status_network_list(&self, list: &NetworkConfigList) -> Result<()> {
        if !at_least(&list.cni_version, "1.1.0").unwrap_or(false) {
            return Ok(());
        }
        let inject = [
            ("name", Value::from(list.name.clone())),
            ("cniVersion", Value::from(list.cni_version.clone())),
        ];
        for p in &list.plugins {
            let c = inject_conf(p, &inject, &[]).map_err(|e| {
                Error::new(format!(
                    "failed to generate configuration to get plugin STATUS {}: {e}",
                    p.type_
                ))
            })?;
            let plugin = self.find_in_path(&c.type_)?;
            self.exec_verb(&plugin, &c.bytes, "STATUS", &RuntimeConf::default())?;
        }
        Ok(())
    }

    /// `GetVersionInfo`: the plugin's VERSION reply.
    pub fn version_info(&self, plugin_type: &str) -> Result<Value> {
        let plugin = self.find_in_path(plugin_type)?;
        let stdin = format!("{{\"cniVersion\":{:?}}}", version::CURRENT);
        let path = "dummy";
        let out = match self.exec(
            &plugin,
            stdin.as_bytes(),
            &[
                ("CNI_COMMAND", "VERSION"),
                ("CNI_CONTAINERID", ""),
                ("CNI_NETNS", "dummy"),
                ("CNI_ARGS", ""),
                ("CNI_IFNAME", "dummy"),
                ("CNI_PATH", path),
            ],
        ) {
            Ok(o) => o,
            Err(e) if e.msg == "unknown CNI_COMMAND: VERSION" => {
                return Ok(json!({"cniVersion": "0.1.0", "supportedVersions": ["0.1.0"]}))
            }
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&out).map_err(|e| Error::new(format!("decoding version info: {e}")))
    }

    /// `ValidateNetworkList`: every plugin exists and supports the list's version; returns
    /// the enabled capabilities.
    pub fn validate_network_list(&self, list: &NetworkConfigList) -> Result<Vec<String>> {
        let want = if list.cni_version.is_empty() {
            "0.1.0"
        } else {
            &list.cni_version
        };
        let mut errs = Vec::new();
        let mut caps = Vec::new();
        for p in &list.plugins {
            match self.version_info(&p.type_) {
                Ok(vi) => {
                    let ok = vi["supportedVersions"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == want));
                    if !ok {
                        errs.push(format!(
                            "plugin {} does not support config version {want:?}",
                            p.type_
                        ));
                    }
                }
                Err(e) => errs.push(e.msg),
            }
            for (c, on) in &p.capabilities {
                if *on && !caps.contains(c) {
                    caps.push(c.clone());
                }
            }
        }
        if errs.is_empty() {
            Ok(caps)
        } else {
            Err(Error::new(format!("[{}]", errs.join(" "))))
        }
    }
}

fn describe(p: &PluginConfig) -> String {
    if p.name.is_empty() {
        format!("type={:?}", p.type_)
    } else {
        format!("type={:?} name={:?}", p.type_, p.name)
    }
}

fn attachment_from(v: &Value) -> Option<NetworkAttachment> {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let config = match v.get("config") {
        Some(Value::String(b)) => base64_decode(b)?,
        _ => Vec::new(),
    };
    let cni_args = v["cniArgs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((
                        p.get(0)?.as_str()?.to_string(),
                        p.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(NetworkAttachment {
        container_id: s("containerId"),
        network: s("networkName"),
        ifname: s("ifName"),
        config,
        netns: s("netns"),
        cni_args,
        capability_args: v["capabilityArgs"].as_object().cloned().unwrap_or_default(),
    })
}

/// The config's `cniVersion` as libcni's ConfigDecoder reads it ("" is 0.1.0).
fn conf_version_of(bytes: &[u8]) -> String {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    match v["cniVersion"].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "0.1.0".into(),
    }
}

/// A plugin's result as the typed Go value of its own version, marshalled again: unknown keys
/// dropped, fields in struct order, `dns` always present. `default_version` fills a missing
/// `cniVersion` (fixupResultVersion).
pub fn typed_result(raw: &Value, default_version: &str) -> Result<Value> {
    let mut version = raw["cniVersion"].as_str().unwrap_or("").to_string();
    if version.is_empty() {
        version = if default_version.is_empty() {
            "0.1.0".into()
        } else {
            default_version.into()
        };
    }
    let model = cni_core::result::parse(&cni_core::json::fold_keys(raw), &version)
        .map_err(|e| Error::new(e.to_string()))?;
    convert_result_model(&model, &version)
}

/// `Result.GetAsVersion`.
pub fn convert_result(result: &Value, version: &str) -> Result<Value> {
    let from = result["cniVersion"].as_str().unwrap_or("0.1.0").to_string();
    let model = cni_core::result::parse(&cni_core::json::fold_keys(result), &from)
        .map_err(|e| Error::new(e.to_string()))?;
    convert_result_model(&model, version)
}

fn convert_result_model(model: &cni_core::types::CniResult, version: &str) -> Result<Value> {
    let mut v =
        cni_core::result::to_version(model, version).map_err(|e| Error::new(e.to_string()))?;
    // Go's `DNS types.DNS json:"dns,omitempty"` is a struct: omitempty never drops it.
    if let Value::Object(m) = &mut v {
        if !m.contains_key("dns") {
            m.insert("dns".into(), json!({}));
        }
    }
    Ok(v)
}

/// `buildOneConfig`: name, cniVersion and (when there is one) prevResult injected, then the
/// runtimeConfig of `injectRuntimeConfig`.
pub fn build_one_config(
    name: &str,
    cni_version: &str,
    orig: &PluginConfig,
    prev: Option<&Value>,
    rt: Option<&RuntimeConf>,
) -> Result<PluginConfig> {
    let mut inject = vec![
        ("name", Value::from(name)),
        ("cniVersion", Value::from(cni_version)),
    ];
    if let Some(p) = prev {
        inject.push(("prevResult", p.clone()));
    }
    let conf = inject_conf(orig, &inject, &["prevResult"])?;
    match rt {
        Some(rt) => inject_runtime_config(&conf, rt),
        None => Ok(conf),
    }
}

/// `injectRuntimeConfig`: the capability args whose key the plugin declares `true` become
/// `runtimeConfig` (replacing any in the file); nothing is touched when none match.
pub fn inject_runtime_config(orig: &PluginConfig, rt: &RuntimeConf) -> Result<PluginConfig> {
    let mut rc = Map::new();
    for (cap, supported) in &orig.capabilities {
        if !supported {
            continue;
        }
        if let Some(data) = rt.capability_args.get(cap) {
            rc.insert(cap.clone(), data.clone());
        }
    }
    if rc.is_empty() {
        return Ok(orig.clone());
    }
    Ok(inject_conf(
        orig,
        &[("runtimeConfig", Value::Object(rc))],
        &[],
    )?)
}

fn cni_reg_ok(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// `value` must be non-empty (else `missing`) and match cniReg (else `invalid`): the shape of
/// Go's `ValidateContainerID` and `ValidateNetworkName`.
fn validate_reg(value: &str, missing: Error, invalid: impl FnOnce() -> Error) -> Result<()> {
    if value.is_empty() {
        return Err(missing);
    }
    if !cni_reg_ok(value) {
        return Err(invalid());
    }
    Ok(())
}

/// `utils.ValidateContainerID`.
pub fn validate_container_id(id: &str) -> Result<()> {
    validate_reg(
        id,
        Error {
            code: 3,
            msg: "missing containerID".into(),
        },
        || Error {
            code: 4,
            msg: format!("invalid characters in containerID; {id}"),
        },
    )
}

/// `utils.ValidateNetworkName`.
pub fn validate_network_name(name: &str) -> Result<()> {
    validate_reg(
        name,
        Error {
            code: 7,
            msg: "missing network name:".into(),
        },
        || Error {
            code: 7,
            msg: format!("invalid characters found in network name; {name}"),
        },
    )
}

/// `utils.ValidateInterfaceName`.
pub fn validate_interface_name(ifname: &str) -> Result<()> {
    let e = |msg: &str| {
        Err(Error {
            code: 4,
            msg: msg.into(),
        })
    };
    if ifname.is_empty() {
        return e("interface name is empty");
    }
    if ifname.len() > 15 {
        return e("interface name is too long; interface name should be less than 16 characters");
    }
    if ifname == "." || ifname == ".." {
        return e("interface name is . or ..");
    }
    if ifname
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return e("interface name contains / or : or whitespace characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
