//! Loading network configurations the way libcni 1.3's `conf.go` does: `.conflist` files
//! (`NetworkConfFromBytes`, including `cniVersions`, `disableCheck`, `disableGC`,
//! `loadOnlyInlinedPlugins` and plugins from `<dir>/<name>/*.conf`), single `.conf`/`.json`
//! files (`ConfFromFile`, up-converted by `ConfListFromConf`), and `LoadNetworkConf`.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::gojson::{as_go_map, marshal};
use super::version::{greater_than, CURRENT};

/// One plugin's configuration: its bytes as they will be sent, and the fields libcni reads.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    pub bytes: Vec<u8>,
    pub type_: String,
    pub name: String,
    pub cni_version: String,
    /// `capabilities` as libcni decodes it (`map[string]bool`).
    pub capabilities: Vec<(String, bool)>,
}

/// A network configuration list.
#[derive(Clone, Debug)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<PluginConfig>,
    pub bytes: Vec<u8>,
}

fn err(msg: impl Into<String>) -> String {
    msg.into()
}

/// `NetworkPluginConfFromBytes` (= the deprecated `ConfFromBytes`).
pub fn plugin_conf_from_bytes(bytes: &[u8]) -> Result<PluginConfig, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("error parsing configuration: {e}"))?;
    let o = v
        .as_object()
        .ok_or_else(|| err("error parsing configuration: not a JSON object"))?;
    let string = |k: &str| -> Result<String, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(x) => Err(format!(
                "error parsing configuration: {k} must be a string, not {x}"
            )),
        }
    };
    let type_ = string("type")?;
    if type_.is_empty() {
        return Err(err("error parsing configuration: missing 'type'"));
    }
    let mut capabilities = Vec::new();
    match o.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) => {
            for (k, b) in c {
                let b = b.as_bool().ok_or_else(|| {
                    format!("error parsing configuration: capability {k:?} must be a bool")
                })?;
                capabilities.push((k.clone(), b));
            }
        }
        Some(_) => {
            return Err(err(
                "error parsing configuration: capabilities must be an object",
            ))
        }
    }
    Ok(PluginConfig {
        bytes: bytes.to_vec(),
        type_,
        name: string("name")?,
        cni_version: string("cniVersion")?,
        capabilities,
    })
}

/// `NetworkConfFromBytes` (= `ConfListFromBytes`): the list without `<dir>/<name>/*.conf`.
pub fn conf_list_from_bytes(bytes: &[u8]) -> Result<NetworkConfigList, String> {
    let raw: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("error parsing configuration list: {e}"))?;
    let raw = raw
        .as_object()
        .ok_or_else(|| err("error parsing configuration list: not a JSON object"))?;
    let name = match raw.get("name") {
        None => return Err(err("error parsing configuration list: no name")),
        Some(Value::String(s)) => s.clone(),
        Some(x) => {
            return Err(format!(
                "error parsing configuration list: invalid name type {x}"
            ))
        }
    };
    let mut cni_version = match raw.get("cniVersion") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(x) => {
            return Err(format!(
                "error parsing configuration list: invalid cniVersion type {x}"
            ))
        }
    };
    if let Some(rvs) = raw.get("cniVersions") {
        let rvs = rvs
            .as_array()
            .ok_or_else(|| err("error parsing configuration list: invalid type for cniVersions"))?;
        let mut vs = Vec::new();
        for (i, rv) in rvs.iter().enumerate() {
            let v = rv.as_str().ok_or_else(|| {
                format!("error parsing configuration list: invalid type for cniVersions index {i}")
            })?;
            // Versions newer than the spec this implementation speaks are skipped.
            if !greater_than(v, CURRENT).map_err(|e| {
                format!("error parsing configuration list: invalid cniVersions entry {v} at index {i}: {e}")
            })? {
                vs.push(v.to_string());
            }
        }
        if !cni_version.is_empty()
            && !greater_than(&cni_version, CURRENT).map_err(|e| {
                format!("error parsing configuration list: invalid cniVersion {cni_version}: {e}")
            })?
        {
            vs.push(cni_version.clone());
        }
        vs.sort_by(|a, b| {
            if greater_than(a, b).unwrap_or(false) {
                std::cmp::Ordering::Greater
            } else if a == b {
                std::cmp::Ordering::Equal
            } else {
                std::cmp::Ordering::Less
            }
        });
        if let Some(v) = vs.last() {
            cni_version = v.clone();
        }
    }
    let read_bool = |key: &str| -> Result<bool, String> {
        match raw.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.to_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                l => Err(format!(
                    "error parsing configuration list: invalid value {l:?} for {key}"
                )),
            },
            Some(x) => Err(format!(
                "error parsing configuration list: invalid type {x} for {key}"
            )),
        }
    };
    let mut list = NetworkConfigList {
        name,
        cni_version,
        disable_check: read_bool("disableCheck")?,
        disable_gc: read_bool("disableGC")?,
        load_only_inlined_plugins: read_bool("loadOnlyInlinedPlugins")?,
        plugins: Vec::new(),
        bytes: bytes.to_vec(),
    };
    let Some(plugins) = raw.get("plugins") else {
        if list.load_only_inlined_plugins {
            return Err(err("error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key"));
        }
        return Ok(list);
    };
    let plugins = plugins
        .as_array()
        .ok_or_else(|| err("error parsing configuration list: invalid 'plugins' type"))?;
    if plugins.is_empty() {
        return Err(err("error parsing configuration list: no plugins in list"));
    }
    for (i, p) in plugins.iter().enumerate() {
        // json.Marshal of the decoded interface{}: sorted keys, float64 numbers.
        let bytes = marshal(&as_go_map(p));
        let pc = plugin_conf_from_bytes(&bytes)
            .map_err(|e| format!("failed to parse plugin config {i}: {e}"))?;
        list.plugins.push(pc);
    }
    Ok(list)
}

/// `ConfFiles`: the regular files of `dir` with one of `exts` (".conf"), in name order
/// (Go's `os.ReadDir` sorts); a missing directory is no error.
pub fn conf_files(dir: &Path, exts: &[&str]) -> Result<Vec<std::path::PathBuf>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.iter().any(|e| e.strip_prefix('.') == Some(x)))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// `NetworkConfFromFile` (= `ConfListFromFile`).
pub fn conf_list_from_file(path: &Path) -> Result<NetworkConfigList, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("error reading {}: {e}", path.display()))?;
    let mut list = conf_list_from_bytes(&bytes)?;
    if !list.load_only_inlined_plugins {
        let dir = path.parent().unwrap_or(Path::new(".")).join(&list.name);
        for f in conf_files(&dir, &[".conf"]).map_err(|e| {
            format!(
                "failed to read plugin config files in {}: {e}",
                dir.display()
            )
        })? {
            let b = std::fs::read(&f).map_err(|e| format!("error reading {}: {e}", f.display()))?;
            list.plugins.push(plugin_conf_from_bytes(&b)?);
        }
    }
    if list.plugins.is_empty() {
        return Err(err("no plugin configs found"));
    }
    Ok(list)
}

/// `ConfFromFile`: a single-plugin `.conf`.
pub fn conf_from_file(path: &Path) -> Result<PluginConfig, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("error reading {}: {e}", path.display()))?;
    plugin_conf_from_bytes(&bytes)
}

/// `ConfListFromConf`: a single config up-converted into a one-plugin list.
pub fn conf_list_from_conf(original: &PluginConfig) -> Result<NetworkConfigList, String> {
    let raw: Value = serde_json::from_slice(&original.bytes).map_err(|e| e.to_string())?;
    let list = json!({
        "name": original.name,
        "cniVersion": original.cni_version,
        "plugins": [raw],
    });
    conf_list_from_bytes(&marshal(&as_go_map(&list)))
}

/// Either file kind, as a runtime picks it by extension: `.conflist` through
/// `ConfListFromFile`, `.conf`/`.json` through `ConfFromFile` + `ConfListFromConf`.
pub fn load_file(path: &Path) -> Result<NetworkConfigList, String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("conflist") => conf_list_from_file(path),
        Some("conf") | Some("json") => conf_list_from_conf(&conf_from_file(path)?),
        _ => Err(format!(
            "{}: not a .conflist, .conf or .json network configuration",
            path.display()
        )),
    }
}

/// `LoadNetworkConf(dir, name)`: the first `.conflist` (by file name) with that name, else the
/// first `.conf`/`.json` of that name, up-converted.
pub fn load_network_conf(dir: &Path, name: &str) -> Result<NetworkConfigList, String> {
    let lists = conf_files(dir, &[".conflist"])?;
    for f in &lists {
        let c = conf_list_from_file(f)?;
        if c.name == name {
            return Ok(c);
        }
    }
    let singles = conf_files(dir, &[".conf", ".json"])?;
    if singles.is_empty() {
        if !lists.is_empty() {
            return Err(format!(
                "no net configuration with name \"{name}\" in {}",
                dir.display()
            ));
        }
        return Err(format!("no net configurations found in {}", dir.display()));
    }
    for f in &singles {
        let c = conf_from_file(f)?;
        if c.name == name {
            return conf_list_from_conf(&c);
        }
    }
    Err(format!(
        "no net configuration with name \"{name}\" in {}",
        dir.display()
    ))
}

/// `InjectConf`: decode the plugin's bytes into a map, set `values`, encode again (sorted keys).
/// `typed` names injected values that are typed Go values (a `prevResult` struct, a GC
/// attachment slice): they keep their field order instead of being sorted, and a typed nil
/// (`null`) passes libcni's nil check.
pub fn inject_conf(
    orig: &PluginConfig,
    values: &[(&str, Value)],
    typed: &[&str],
) -> Result<PluginConfig, String> {
    let v: Value = serde_json::from_slice(&orig.bytes)
        .map_err(|e| format!("unmarshal existing network bytes: {e}"))?;
    let Value::Object(mut m) = as_go_map(&v) else {
        return Err(err("unmarshal existing network bytes: not an object"));
    };
    for (k, val) in values {
        if k.is_empty() {
            return Err(err("keys cannot be empty"));
        }
        let is_typed = typed.contains(k);
        if val.is_null() && !is_typed {
            return Err(format!("key '{k}' value must not be nil"));
        }
        let val = if is_typed {
            val.clone()
        } else {
            as_go_map(val)
        };
        m.insert(k.to_string(), val);
    }
    m.sort_keys();
    let bytes = marshal(&Value::Object(m));
    plugin_conf_from_bytes(&bytes)
}

/// The map form of a plugin's bytes (for assertions).
pub fn plugin_json(p: &PluginConfig) -> Map<String, Value> {
    match serde_json::from_slice(&p.bytes) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}
