//! The runner against libcni's own expectations (`libcni/api_test.go`, `conf_test.go`), with
//! small fake plugins (shell scripts) so only the runner's logic is under test.

use super::*;
use crate::TempDir;
use std::os::unix::fs::PermissionsExt;

/// A fake plugin: prints `result` on ADD; fails with `fail` (code 50) when given.
fn fake(dir: &Path, name: &str, result: &str, fail: Option<&str>) {
    let body = match fail {
        Some(msg) => format!(
            "#!/bin/sh\ncat >/dev/null\nprintf '%s' '{{\"cniVersion\":\"1.0.0\",\"code\":50,\"msg\":\"{msg}\"}}'\nexit 1\n"
        ),
        None => format!(
            "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && printf '%s' '{result}'\n[ \"$CNI_COMMAND\" = VERSION ] && printf '%s' '{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}}'\nexit 0\n"
        ),
    };
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Fx {
    bin: TempDir,
    cache: TempDir,
    cni: Cni,
}

fn fixture() -> Fx {
    let bin = TempDir::new("lcbin");
    let cache = TempDir::new("lccache");
    fake(
        bin.path(),
        "first",
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}],"extra":"dropped"}"#,
        None,
    );
    fake(
        bin.path(),
        "second",
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.1.2.3/24","interface":0}]}"#,
        None,
    );
    fake(bin.path(), "broken", "", Some("plugin error: banana"));
    let cni = Cni::new(vec![bin.0.clone()], cache.0.clone()).recording();
    Fx { bin, cache, cni }
}

fn list(version: &str, extra: &str) -> NetworkConfigList {
    conf_list_from_bytes(
        format!(
            r#"{{"cniVersion":"{version}","name":"some-list",{extra}"plugins":[
              {{"type":"first","zKey":1,"aKey":{{"y":2,"b":1}},"capabilities":{{"portMappings":true,"somethingElse":true,"noCapability":false}}}},
              {{"type":"second","name":"n2"}}]}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn rt() -> RuntimeConf {
    let caps = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "somethingElse": ["foobar", "baz"],
        "noCapability": true,
        "notAdded": [true, false],
    });
    RuntimeConf {
        container_id: "some-container-id".into(),
        netns: "/some/netns/path".into(),
        ifname: "some-eth0".into(),
        args: vec![("FOO".into(), "BAR".into()), ("K".into(), "V".into())],
        capability_args: caps.as_object().unwrap().clone(),
    }
}

#[test]
fn runtime_config_only_for_declared_enabled_capabilities() {
    let fx = fixture();
    fx.cni.add_network_list(&list("1.0.0", ""), &rt()).unwrap();
    let calls = fx.cni.calls();
    let rc = &calls[0].stdin_json()["runtimeConfig"];
    let keys: Vec<&String> = rc.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["portMappings", "somethingElse"]);
    assert_eq!(rc["portMappings"][0]["hostPort"], 8080);
    // The second plugin declares nothing: no runtimeConfig key at all.
    assert!(calls[1].stdin_json().get("runtimeConfig").is_none());
}

#[test]
fn no_runtime_config_when_no_capability_matches() {
    let fx = fixture();
    let mut r = rt();
    r.capability_args = json!({"portMappings22": [], "somethingElse22": ["x"]})
        .as_object()
        .unwrap()
        .clone();
    fx.cni.add_network_list(&list("1.0.0", ""), &r).unwrap();
    assert!(fx.cni.calls()[0]
        .stdin_json()
        .get("runtimeConfig")
        .is_none());
}

#[test]
fn runtime_config_in_the_file_is_replaced_not_merged() {
    let p = plugin_conf_from_bytes(
        br#"{"type":"x","capabilities":{"dns":true},"runtimeConfig":{"old":1,"dns":{}}}"#,
    )
    .unwrap();
    let mut r = RuntimeConf::default();
    r.capability_args
        .insert("dns".into(), json!({"servers": ["1.1.1.1"]}));
    let c = inject_runtime_config(&p, &r).unwrap();
    let v: Value = serde_json::from_slice(&c.bytes).unwrap();
    assert_eq!(v["runtimeConfig"], json!({"dns": {"servers": ["1.1.1.1"]}}));
}

#[test]
fn add_list_chains_prev_result_and_injects_name_and_version() {
    let fx = fixture();
    let res = fx.cni.add_network_list(&list("1.0.0", ""), &rt()).unwrap();
    let calls = fx.cni.calls();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c.command, "ADD");
        let v = c.stdin_json();
        assert_eq!(v["name"], "some-list");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(c.env("CNI_CONTAINERID"), Some("some-container-id"));
        assert_eq!(c.env("CNI_NETNS"), Some("/some/netns/path"));
        assert_eq!(c.env("CNI_IFNAME"), Some("some-eth0"));
        assert_eq!(c.env("CNI_ARGS"), Some("FOO=BAR;K=V"));
        assert_eq!(c.env("CNI_PATH"), Some(fx.bin.str()));
        // The caller's environment is inherited, as libcni's AsEnv does.
        assert!(c.env("PATH").is_some());
    }
    assert!(calls[0].stdin_json().get("prevResult").is_none());
    // The first plugin's result as Go's typed 1.0.0 Result: unknown keys dropped, dns {}.
    assert_eq!(
        calls[1].stdin_json()["prevResult"],
        json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}],"dns":{}})
    );
    // The list's result is the last plugin's.
    assert_eq!(res["interfaces"][0]["name"], "eth0");
}

#[test]
fn stdin_bytes_are_go_marshalled() {
    let fx = fixture();
    let mut r = rt();
    r.capability_args.clear();
    fx.cni.add_network_list(&list("1.0.0", ""), &r).unwrap();
    let calls = fx.cni.calls();
    // map[string]interface{}: sorted keys at every depth.
    assert_eq!(
        String::from_utf8(calls[0].stdin.clone()).unwrap(),
        r#"{"aKey":{"b":1,"y":2},"capabilities":{"noCapability":false,"portMappings":true,"somethingElse":true},"cniVersion":"1.0.0","name":"some-list","type":"first","zKey":1}"#
    );
    // A prevResult injected without a runtimeConfig keeps the Go struct's field order.
    let s = String::from_utf8(calls[1].stdin.clone()).unwrap();
    assert!(
        s.contains(r#""prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}],"dns":{}}"#),
        "{s}"
    );
}

#[test]
fn prev_result_is_re_sorted_when_runtime_config_is_injected() {
    // injectRuntimeConfig runs InjectConf a second time: the prevResult went through a map.
    let p = plugin_conf_from_bytes(br#"{"type":"x","capabilities":{"dns":true}}"#).unwrap();
    let prev = json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}],"dns":{}});
    let mut r = RuntimeConf::default();
    r.capability_args.insert("dns".into(), json!({}));
    let c = build_one_config("n", "1.0.0", &p, Some(&prev), Some(&r)).unwrap();
    let s = String::from_utf8(c.bytes).unwrap();
    assert!(
        s.contains(
            r#""prevResult":{"cniVersion":"1.0.0","dns":{},"ips":[{"address":"10.0.0.2/24"}]}"#
        ),
        "{s}"
    );
}

#[test]
fn add_caches_like_libcni() {
    let fx = fixture();
    let l = list("1.0.0", "");
    let r = rt();
    let res = fx.cni.add_network_list(&l, &r).unwrap();
    let f = fx
        .cache
        .path()
        .join("results/some-list-some-container-id-some-eth0");
    let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    assert_eq!(v["kind"], "cniCacheV1");
    assert_eq!(v["containerId"], "some-container-id");
    assert_eq!(v["ifName"], "some-eth0");
    assert_eq!(v["networkName"], "some-list");
    assert_eq!(v["netns"], "/some/netns/path");
    assert_eq!(v["cniArgs"], json!([["FOO", "BAR"], ["K", "V"]]));
    assert_eq!(v["capabilityArgs"]["notAdded"], json!([true, false]));
    // Go's []byte: base64 of the list's own bytes.
    let cfg = gojson::base64_decode(v["config"].as_str().unwrap()).unwrap();
    assert_eq!(cfg, l.bytes);
    assert_eq!(v["result"]["interfaces"], res["interfaces"]);
    let (cached_cfg, newrt) = fx.cni.cached_config("some-list", &r).unwrap().unwrap();
    assert_eq!(cached_cfg, l.bytes);
    assert_eq!(newrt.args, r.args);
    let att = fx.cni.cached_attachments("some-container-id");
    assert_eq!(att.len(), 1);
    assert_eq!(att[0].network, "some-list");
    assert!(fx.cni.cached_attachments("other").is_empty());
}

#[test]
fn add_failure_names_the_plugin_and_writes_no_cache() {
    let fx = fixture();
    let l = conf_list_from_bytes(
        br#"{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"first"},{"type":"broken","name":"b"}]}"#,
    )
    .unwrap();
    let e = fx.cni.add_network_list(&l, &rt()).unwrap_err();
    assert_eq!(e.code, 50);
    assert_eq!(
        e.msg,
        r#"plugin type="broken" name="b" failed (add): plugin error: banana"#
    );
    assert!(!fx.cache.path().join("results").exists());
    let missing = conf_list_from_bytes(
        br#"{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"does-not-exist"}]}"#,
    )
    .unwrap();
    let e = fx.cni.add_network_list(&missing, &rt()).unwrap_err();
    assert!(
        e.msg.contains(r#"failed to find plugin "does-not-exist""#),
        "{e}"
    );
}

#[test]
fn add_validates_container_id_network_name_and_ifname() {
    let fx = fixture();
    let l = list("1.0.0", "");
    let mut r = rt();
    r.container_id = "some-container-id;".into();
    assert_eq!(fx.cni.add_network_list(&l, &r).unwrap_err().code, 4);
    r.container_id = String::new();
    assert_eq!(fx.cni.add_network_list(&l, &r).unwrap_err().code, 3);
    let mut bad = l.clone();
    bad.name = "invalid-name-\n".into();
    assert_eq!(fx.cni.add_network_list(&bad, &rt()).unwrap_err().code, 7);
    for ifname in ["", "1234567890123456", ".", "..", "a/b", "a:b", "a b"] {
        let mut r = rt();
        r.ifname = ifname.into();
        let e = fx.cni.add_network_list(&l, &r).unwrap_err();
        assert_eq!(e.code, 4, "{ifname:?}: {e}");
    }
    assert!(fx.cni.calls().is_empty(), "nothing may be exec'd");
}

#[test]
fn check_gates_on_version_disable_check_and_passes_the_cached_result() {
    let fx = fixture();
    let old = list("0.3.1", "");
    let e = fx.cni.check_network_list(&old, &rt()).unwrap_err();
    assert_eq!(
        e.msg,
        r#"configuration version "0.3.1" does not support the CHECK command"#
    );
    let dis = list("1.0.0", r#""disableCheck":"true","#);
    fx.cni.check_network_list(&dis, &rt()).unwrap();
    assert!(fx.cni.calls().is_empty());

    let l = list("0.4.0", "");
    let added = fx.cni.add_network_list(&l, &rt()).unwrap();
    let n = fx.cni.calls().len();
    fx.cni.check_network_list(&l, &rt()).unwrap();
    let calls = &fx.cni.calls()[n..];
    assert_eq!(calls.len(), 2);
    for c in calls {
        assert_eq!(c.command, "CHECK");
        // The fake answered 1.0.0; the cache converts to the list's version.
        assert_eq!(
            c.stdin_json()["prevResult"],
            convert_result(&added, "0.4.0").unwrap()
        );
        assert_eq!(c.stdin_json()["prevResult"]["ips"][0]["version"], "4");
    }
    // An unreadable cache is an error for CHECK.
    let f = fx.cni.cache_file("some-list", &rt()).unwrap();
    std::fs::write(&f, "{garbage").unwrap();
    let e = fx.cni.check_network_list(&l, &rt()).unwrap_err();
    assert!(
        e.msg
            .starts_with("failed to get network \"some-list\" cached result"),
        "{e}"
    );
}

#[test]
fn del_runs_in_reverse_with_the_cached_result_converted_to_the_list_version() {
    let fx = fixture();
    let l = list("1.0.0", "");
    fx.cni.add_network_list(&l, &rt()).unwrap();
    // The config was moved to 0.4.0 while the container ran: the cache converts.
    let l040 = list("0.4.0", "");
    let n = fx.cni.calls().len();
    fx.cni.del_network_list(&l040, &rt()).unwrap();
    let calls = &fx.cni.calls()[n..];
    let types: Vec<String> = calls
        .iter()
        .map(|c| c.stdin_json()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["second", "first"]);
    for c in calls {
        assert_eq!(c.command, "DEL");
        let p = &c.stdin_json()["prevResult"];
        assert_eq!(p["cniVersion"], "0.4.0");
        assert_eq!(p["ips"][0]["version"], "4");
    }
    assert!(!fx.cni.cache_file("some-list", &rt()).unwrap().exists());
    // A second DEL is fine and has no prevResult.
    let n = fx.cni.calls().len();
    fx.cni.del_network_list(&l, &rt()).unwrap();
    assert!(fx.cni.calls()[n..]
        .iter()
        .all(|c| c.stdin_json().get("prevResult").is_none()));
}

#[test]
fn del_before_040_sends_no_prev_result_and_tolerates_a_bad_cache() {
    let fx = fixture();
    let l = list("0.3.1", "");
    fx.cni.add_network_list(&l, &rt()).unwrap();
    let n = fx.cni.calls().len();
    fx.cni.del_network_list(&l, &rt()).unwrap();
    assert!(fx.cni.calls()[n..]
        .iter()
        .all(|c| c.stdin_json().get("prevResult").is_none()));
    let l = list("1.0.0", "");
    fx.cni.add_network_list(&l, &rt()).unwrap();
    let f = fx.cni.cache_file("some-list", &rt()).unwrap();
    std::fs::write(&f, "{garbage").unwrap();
    fx.cni.del_network_list(&l, &rt()).unwrap();
    assert!(!f.exists());
}

#[test]
fn legacy_cache_file_is_a_bare_result() {
    let fx = fixture();
    let f = fx.cni.cache_file("some-list", &rt()).unwrap();
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(
        &f,
        r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.2.3/24"}],"dns":{}}"#,
    )
    .unwrap();
    let r = fx
        .cni
        .cached_result("some-list", "1.0.0", &rt())
        .unwrap()
        .unwrap();
    assert_eq!(
        r,
        json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24"}],"dns":{}})
    );
    // Not an attachment: GetCachedAttachments skips non-cniCacheV1 files.
    assert!(fx.cni.cached_attachments("").is_empty());
}

fn gc_calls(fx: &Fx, from: usize) -> Vec<Invocation> {
    fx.cni.calls()[from..].to_vec()
}

#[test]
fn gc_sequence_of_libcni_api_test() {
    let fx = fixture();
    let mut l = list("1.1.0", "");
    let r = rt();
    fx.cni.add_network_list(&l, &r).unwrap();
    // Another network's cache entry is never touched by this list's GC.
    let other = conf_list_from_bytes(
        br#"{"cniVersion":"1.1.0","name":"other","plugins":[{"type":"first"}]}"#,
    )
    .unwrap();
    fx.cni.add_network_list(&other, &r).unwrap();

    l.disable_gc = true;
    let n = fx.cni.calls().len();
    fx.cni.gc_network_list(&l, GcArgs::NilList).unwrap();
    assert_eq!(fx.cni.calls().len(), n);
    l.disable_gc = false;

    let valid = [GcAttachment {
        container_id: r.container_id.clone(),
        ifname: r.ifname.clone(),
    }];
    fx.cni.gc_network_list(&l, GcArgs::List(&valid)).unwrap();
    let c = gc_calls(&fx, n);
    assert_eq!(c.len(), 2, "only GC, one per plugin: {c:?}");
    for x in &c {
        assert_eq!(x.command, "GC");
        let v = x.stdin_json();
        let want = json!([{"containerID": "some-container-id", "ifname": "some-eth0"}]);
        assert_eq!(v["cni.dev/valid-attachments"], want);
        assert_eq!(v["cni.dev/attachments"], want);
        assert_eq!(v["name"], "some-list");
        assert!(v.get("prevResult").is_none() && v.get("runtimeConfig").is_none());
        assert_eq!(x.env("CNI_CONTAINERID"), Some(""));
        assert_eq!(x.env("CNI_NETNS"), Some(""));
        assert_eq!(x.env("CNI_IFNAME"), Some(""));
        assert_eq!(x.env("CNI_ARGS"), Some(""));
    }

    // Nothing valid (a nil list): the cached attachment is deleted first (with its cached
    // netns and CNI_ARGS), then GC with `null`.
    let n = fx.cni.calls().len();
    fx.cni.gc_network_list(&l, GcArgs::NilList).unwrap();
    let c = gc_calls(&fx, n);
    let cmds: Vec<&str> = c.iter().map(|x| x.command.as_str()).collect();
    assert_eq!(cmds, ["DEL", "DEL", "GC", "GC"]);
    assert_eq!(c[0].env("CNI_NETNS"), Some("/some/netns/path"));
    assert_eq!(c[0].env("CNI_ARGS"), Some("FOO=BAR;K=V"));
    assert!(c[0].stdin_json()["prevResult"].is_object());
    // The cached capability args came back too.
    assert_eq!(
        c[1].stdin_json()["runtimeConfig"]["somethingElse"],
        json!(["foobar", "baz"])
    );
    let v = c[2].stdin_json();
    assert!(v
        .as_object()
        .unwrap()
        .contains_key("cni.dev/valid-attachments"));
    assert!(v["cni.dev/valid-attachments"].is_null());
    assert!(fx
        .cni
        .cached_attachments("")
        .iter()
        .all(|a| a.network == "other"));
    assert_eq!(fx.cni.cached_attachments("").len(), 1);

    // cnitool's `gc` (args nil): no key at all.
    let n = fx.cni.calls().len();
    fx.cni.gc_network_list(&l, GcArgs::Nil).unwrap();
    for x in gc_calls(&fx, n) {
        assert_eq!(x.command, "GC");
        let v = x.stdin_json();
        assert!(v.get("cni.dev/valid-attachments").is_none());
        assert!(v.get("cni.dev/attachments").is_none());
    }
    // An empty non-nil list is sent as [].
    let n = fx.cni.calls().len();
    fx.cni.gc_network_list(&l, GcArgs::List(&[])).unwrap();
    assert_eq!(
        gc_calls(&fx, n)[0].stdin_json()["cni.dev/valid-attachments"],
        json!([])
    );
}

#[test]
fn gc_before_110_only_deletes_stale_attachments() {
    let fx = fixture();
    let l = list("1.0.0", "");
    fx.cni.add_network_list(&l, &rt()).unwrap();
    let n = fx.cni.calls().len();
    fx.cni.gc_network_list(&l, GcArgs::Nil).unwrap();
    let cmds: Vec<String> = gc_calls(&fx, n).into_iter().map(|x| x.command).collect();
    assert_eq!(cmds, ["DEL", "DEL"]);
    assert!(fx.cni.cached_attachments("").is_empty());
}

#[test]
fn status_from_110_stops_at_the_first_error() {
    let fx = fixture();
    fx.cni.status_network_list(&list("1.0.0", "")).unwrap();
    assert!(fx.cni.calls().is_empty());
    fx.cni.status_network_list(&list("1.1.0", "")).unwrap();
    let c = fx.cni.calls();
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|x| x.command == "STATUS"));
    assert_eq!(c[0].stdin_json()["name"], "some-list");
    let l = conf_list_from_bytes(
        br#"{"cniVersion":"1.1.0","name":"l","plugins":[{"type":"broken"},{"type":"first"}]}"#,
    )
    .unwrap();
    let e = fx.cni.status_network_list(&l).unwrap_err();
    assert_eq!(e.code, 50);
    assert_eq!(fx.cni.calls().len(), 3);
}

#[test]
fn version_info_and_validate() {
    let fx = fixture();
    let vi = fx.cni.version_info("first").unwrap();
    assert_eq!(vi["supportedVersions"][3], "1.1.0");
    let c = &fx.cni.calls()[0];
    assert_eq!(c.command, "VERSION");
    assert_eq!(c.env("CNI_NETNS"), Some("dummy"));
    assert_eq!(
        String::from_utf8_lossy(&c.stdin),
        r#"{"cniVersion":"1.1.0"}"#
    );
    let caps = fx.cni.validate_network_list(&list("1.0.0", "")).unwrap();
    assert_eq!(caps, ["portMappings", "somethingElse"]);
    assert!(fx.cni.validate_network_list(&list("0.2.0", "")).is_err());
}

#[test]
fn conf_list_parsing_like_conf_go() {
    // cniVersions: the highest this libcni speaks wins; newer ones are skipped.
    let l = conf_list_from_bytes(
        br#"{"name":"n","cniVersion":"0.4.0","cniVersions":["1.0.0","42.0.0"],"plugins":[{"type":"x"}]}"#,
    )
    .unwrap();
    assert_eq!(l.cni_version, "1.0.0");
    assert!(
        conf_list_from_bytes(br#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#)
            .unwrap_err()
            .contains("no name")
    );
    assert!(conf_list_from_bytes(br#"{"name":"n","plugins":[]}"#)
        .unwrap_err()
        .contains("no plugins in list"));
    assert!(
        conf_list_from_bytes(br#"{"name":"n","plugins":[{"name":"x"}]}"#)
            .unwrap_err()
            .contains("missing 'type'")
    );
    assert!(conf_list_from_bytes(
        br#"{"name":"n","disableCheck":"maybe","plugins":[{"type":"x"}]}"#
    )
    .unwrap_err()
    .contains("invalid value \"maybe\" for disableCheck"));
    let l =
        conf_list_from_bytes(br#"{"name":"n","disableGC":true,"plugins":[{"type":"x"}]}"#).unwrap();
    assert!(l.disable_gc && !l.disable_check);
}

#[test]
fn files_dirs_and_up_conversion() {
    let d = TempDir::new("lcconf");
    let p = d.path();
    std::fs::write(
        p.join("10-a.conflist"),
        r#"{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
    )
    .unwrap();
    // Plugins from <dir>/<name>/*.conf are appended (name order) unless loadOnlyInlinedPlugins.
    std::fs::create_dir(p.join("a")).unwrap();
    std::fs::write(p.join("a/2.conf"), r#"{"type":"z"}"#).unwrap();
    std::fs::write(p.join("a/1.conf"), r#"{"type":"y"}"#).unwrap();
    std::fs::write(p.join("a/0.json"), r#"{"type":"ignored"}"#).unwrap();
    let l = load_network_conf(p, "a").unwrap();
    let t: Vec<&str> = l.plugins.iter().map(|x| x.type_.as_str()).collect();
    assert_eq!(t, ["x", "y", "z"]);
    std::fs::write(
        p.join("20-b.conflist"),
        r#"{"name":"b","loadOnlyInlinedPlugins":true,"plugins":[{"type":"x"}]}"#,
    )
    .unwrap();
    std::fs::create_dir(p.join("b")).unwrap();
    std::fs::write(p.join("b/1.conf"), r#"{"type":"y"}"#).unwrap();
    assert_eq!(load_network_conf(p, "b").unwrap().plugins.len(), 1);
    // A single .conf, up-converted: name and cniVersion lifted, the plugin kept whole.
    std::fs::write(
        p.join("30-c.conf"),
        r#"{"cniVersion":"0.4.0","name":"c","type":"bridge","bridge":"br9"}"#,
    )
    .unwrap();
    let c = load_network_conf(p, "c").unwrap();
    assert_eq!((c.name.as_str(), c.cni_version.as_str()), ("c", "0.4.0"));
    assert_eq!(conf::plugin_json(&c.plugins[0])["bridge"], "br9");
    let same = load_file(&p.join("30-c.conf")).unwrap();
    assert_eq!(same.bytes, c.bytes);
    let e = load_network_conf(p, "nope").unwrap_err();
    assert!(e.contains("no net configuration with name \"nope\""), "{e}");
    // A list with no plugins anywhere is an error when loaded from a file.
    std::fs::write(p.join("40-d.conflist"), r#"{"name":"d"}"#).unwrap();
    assert_eq!(
        conf_list_from_file(&p.join("40-d.conflist")).unwrap_err(),
        "no plugin configs found"
    );
}

#[test]
fn cri_sets_up_loopback_first_with_pod_args() {
    let fx = fixture();
    fake(
        fx.bin.path(),
        "loopback",
        r#"{"cniVersion":"0.3.1","interfaces":[{"name":"lo","sandbox":"/x"}],"ips":[{"version":"4","address":"127.0.0.1/8","interface":0}]}"#,
        None,
    );
    let l = list("1.0.0", "");
    let mut pod = cri::pod("p1", "/var/run/netns/cni-1234");
    pod.port_mappings =
        vec![json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""})];
    cri::setup(&fx.cni, &l, &pod).unwrap();
    let c = fx.cni.calls();
    assert_eq!(c[0].stdin_json()["type"], "loopback");
    assert_eq!(c[0].stdin_json()["name"], "cni-loopback");
    assert_eq!(c[0].env("CNI_IFNAME"), Some("lo"));
    assert_eq!(c[1].env("CNI_IFNAME"), Some("eth0"));
    let want = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.sandbox_id, pod.uid
    );
    assert_eq!(c[1].env("CNI_ARGS"), Some(want.as_str()));
    assert_eq!(c[1].env("CNI_NETNS"), Some("/var/run/netns/cni-1234"));
    assert_eq!(
        c[1].stdin_json()["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    cri::remove(&fx.cni, &l, &pod).unwrap();
    assert!(fx.cni.cached_attachments("").is_empty());
}
