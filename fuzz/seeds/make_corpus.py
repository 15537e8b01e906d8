#!/usr/bin/env python3
"""Regenerates the seed corpora (fuzz/corpus/<target>/seed-*) from real inputs of the repo:
the conflists in conf/, the JSON configs and results of the tests, the CNI spec's examples,
and the request bodies dockerd 20.10 sent (docker-observed-calls.jsonl). Usage:
    fuzz/seeds/make_corpus.py [path/to/docker-observed-calls.jsonl]
Seeds are named by content hash, so re-running adds nothing twice."""
import glob, hashlib, json, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def decoded_methods():
    """cnm_shim::router::DECODED, in its order (shim_bodies picks a method by index)."""
    src = open(os.path.join(ROOT, "cnm-shim", "src", "router.rs"), encoding="utf-8").read()
    body = re.search(r"pub const DECODED: \[&str; \d+\] = \[(.*?)\];", src, re.S).group(1)
    return re.findall(r'"([^"]+)"', body)


METHODS = decoded_methods()
VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rust_json_literals():
    """JSON objects written as raw string literals in the repo's Rust sources."""
    for path in glob.glob(os.path.join(ROOT, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if rel.startswith("fuzz/") or "/target/" in rel:
            continue
        src = open(path, encoding="utf-8", errors="replace").read()
        for m in re.finditer(r'r#"(\{.*?\})"#', src, re.S):
            try:
                yield json.loads(m.group(1))
            except ValueError:
                pass


def spec_json_blocks(path):
    if not os.path.exists(path):
        return
    text = open(path, encoding="utf-8").read()
    for m in re.finditer(r"```json\n(.*?)```", text, re.S):
        try:
            yield json.loads(m.group(1))
        except ValueError:
            pass


def ports_seeds(body):
    """shim_ports: one body on a few worlds (its selector byte): dual-stack, IPv4 only with
    another endpoint's ports, IPv6 only, a network host IP of 127.0.0.1, every 4th port busy."""
    for sel in [0x02, 0x10, 0x01, 0x06, 0x62]:
        put("shim_ports", bytes([sel]) + body)


def main():
    # The shared reference dir sits next to the main checkout (../shared/reference).
    ref = next((d for d in (os.path.join(os.path.dirname(ROOT), "shared", "reference"),
                            os.path.join(os.path.dirname(os.path.dirname(ROOT)), "shared", "reference"))
                if os.path.isdir(d)), "")
    observed = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ref, "docker-observed-calls.jsonl")
    objs = list(rust_json_literals()) + list(spec_json_blocks(os.path.join(ref, "cni-spec.md")))
    for f in sorted(glob.glob(os.path.join(ROOT, "conf", "*.conflist"))):
        raw = open(f, "rb").read()
        put("cni_config", raw)
        objs.append(json.loads(raw))
    for o in objs:
        if not isinstance(o, dict):
            continue
        keys = {k.lower() for k in o}
        if keys & {"type", "plugins", "ipam", "cniversion", "name"} and not keys & {"ips", "ip4"}:
            put("cni_config", json.dumps(o, indent=2))
        if "prevresult" in keys:
            prev = next(v for k, v in o.items() if k.lower() == "prevresult")
            for i in range(len(VERSIONS)):
                put("cni_result", bytes([i]) + json.dumps(prev).encode())
        if keys & {"ips", "ip4", "ip6", "interfaces"}:
            for i in range(len(VERSIONS)):
                put("cni_result", bytes([i]) + json.dumps(o).encode())
        if keys >= {"subnet", "block", "vni"}:
            put("agent_values", b"\x00" + json.dumps(o).encode())
        if keys >= {"blocks", "state"} or keys >= {"network", "config", "mtu"}:
            put("agent_values", b"\x01" + json.dumps(o).encode())
    # cnm-agent's own shapes (keys.rs, state.rs, cluster model), as it writes them.
    cfg = {"subnet": "10.250.0.0/16", "block": 26, "vni": 4097, "gateway": "10.250.0.1",
           "port": 4789, "mode": "blocks"}
    put("agent_values", b"\x00" + json.dumps(cfg).encode())
    put("agent_values", b"\x01" + json.dumps({"network": "n1", "host": "h1", "config": cfg, "mtu": 1450}).encode())
    put("agent_values", b"\x01" + json.dumps({
        "network": "n1", "host": "h1", "state": "ok", "etcd_reachable": True, "etcd_error": "",
        "blocks": ["10.250.1.0/26", "10.250.1.64/26"],
        "lost": [{"cidr": "10.250.2.0/26", "reason": "now leased to host h2"}],
        "lease_expired": False, "updated": 1700000000}).encode())
    put("agent_values", b"\x02" + json.dumps({"host": "h1", "vtep": "192.168.1.10",
        "mac": "02:42:ac:11:00:02", "tunnel_ip": "10.250.1.0"}).encode())
    put("agent_values", b"\x02" + json.dumps({"host": "h1", "at": 1700000000}).encode())
    put("agent_values", b"\x02" + json.dumps({"lease": 7587862105334521122,
        "tunnel_ip": "10.250.1.0", "blocks": ["10.250.1.0/26"]}).encode())
    for k in ["/cnm/v1/nets/n1/blocks/10.250.1.0-26", "/cnm/v1/nets/n1/released/10.250.1.64-26",
              "/cnm/v1/nets/n1/config"]:
        put("agent_values", b"\x03" + k.encode())
    # CNI_ARGS and environments as runtimes set them.
    for a in ["IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc",
              "IP=10.1.2.3", "IP=fd00::5/64;MAC=02:00:00:00:00:01", "MAC=c2:11:22:33:44:55",
              "IgnoreUnknown=true;IP=10.22.0.9;foo=bar", "1.0.0", "0.4"]:
        put("cni_args", a)
    put("cni_args", "ADD\nctr-1\n/var/run/netns/x\neth0\nIgnoreUnknown=1;IP=10.0.0.7\n/opt/cni/bin\n")
    put("cni_args", "DEL\nctr-1\n\neth0\n\n/opt/cni/bin\n1")
    # `-p` as dockerd 20.10 sends it in ProgramExternalConnectivity (docker-remote-driver.md):
    # -p 127.0.0.1:18080:80 -p 18081:81/udp, -p 80 and -P (HostPort 0), a host port range,
    # an IPv6 host IP, sctp, 0.0.0.0.
    def pm(*entries):
        return {"NetworkID": "4b4f2e03bfd3", "EndpointID": "3bc381243757", "Options": {
            "com.docker.network.endpoint.exposedports": [{"Proto": e[0], "Port": e[1]} for e in entries],
            "com.docker.network.portmap": [{"Proto": e[0], "IP": "", "Port": e[1], "HostIP": e[2],
                                            "HostPort": e[3], "HostPortEnd": e[4]} for e in entries]}}
    for req in [pm((17, 81, "", 18081, 18081), (6, 80, "127.0.0.1", 18080, 18080)),
                pm((6, 80, "", 0, 0)),
                pm((6, 80, "", 0, 0), (6, 443, "", 0, 0), (17, 53, "", 0, 0)),
                pm((6, 80, "", 8000, 8010)),
                pm((6, 80, "::1", 8080, 8080), (6, 80, "0.0.0.0", 8081, 8081)),
                pm((132, 9999, "", 19999, 19999)),
                pm((6, 80, "127.0.0.1", 8080, 8080), (6, 81, "127.0.0.2", 8080, 8080))]:
        ports_seeds(json.dumps(req).encode())
    # dockerd's request bodies, raw and inside HTTP requests.
    if os.path.exists(observed):
        seen, per_method, seen_ports = set(), {}, set()
        for line in open(observed, encoding="utf-8"):
            call = json.loads(line)
            method = call["path"].lstrip("/")
            body = json.dumps(call["req"]).encode() if call["req"] is not None else b""
            if (method, body) in seen:
                continue
            seen.add((method, body))
            # A few of each: the calls differ mostly in IDs.
            per_method[method] = per_method.get(method, 0) + 1
            if per_method[method] > 8:
                continue
            if method in METHODS:
                put("shim_bodies", bytes([METHODS.index(method)]) + body)
            if method == "NetworkDriver.ProgramExternalConnectivity":
                # The port map is what matters: one body per distinct one.
                opts = json.dumps(call["req"].get("Options"), sort_keys=True)
                if opts not in seen_ports:
                    seen_ports.add(opts)
                    ports_seeds(body)
            head = (f"POST /{method} HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n"
                    f"Content-Length: {len(body)}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n"
                    f"Content-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n").encode()
            put("shim_http", head + body)
            if body:
                chunked = (f"POST /{method} HTTP/1.1\r\nHost: \r\nTransfer-Encoding: chunked\r\n\r\n"
                           f"{len(body):x}\r\n").encode() + body + b"\r\n0\r\n\r\n"
                put("shim_http", chunked + head + body)


main()
