#!/usr/bin/env python3
"""Merges the per-bench JSON files of scripts/bench-report.sh into one results file and draws it.

Usage: bench-chart.py [--readme README.md] OUT_DIR MACHINE_JSON BENCH_JSON...
Writes OUT_DIR/results.json (machine + every bench's rows), OUT_DIR/results.md (one table per
bench, ours against the peer with the ratio) and OUT_DIR/results.png (one panel per group, ours
and the peer side by side, log scale when the bars differ by more than 20x). With --readme, the
tables also replace the part of that file between the bench-report begin/end markers.
Each BENCH_JSON is {"bench", "params", "rows": [{group, metric, unit, better, ours, peer,
peer_name}]} as written by the benches under BENCH_JSON=FILE (tests/src/bench.rs `Report`).
"""

import json
import math
import sys
from pathlib import Path


def ratio(row):
    """How many times better ours is than the peer (>1: ours wins), or None."""
    ours, peer = row.get("ours"), row.get("peer")
    if ours is None or peer is None or ours <= 0 or peer <= 0:
        return None
    return peer / ours if row["better"] == "lower" else ours / peer


def fmt(x):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def markdown(results):
    m = results["machine"]
    out = [
        "# Benchmark results",
        "",
        f"Taken {m['date']} on {m['cpu']} ({m['cores']} cores), kernel {m['kernel']}, "
        f"load average {m['loadavg']} at the start. Mode: {m['mode']}.",
        "",
        "Ratio = how many times better ours is than the peer (peer/ours for times, "
        "ours/peer for throughput). Every figure comes from one run of "
        "`scripts/bench-report.sh`, ours and the peer measured side by side.",
        "",
    ]
    for b in results["benches"]:
        out.append(f"## {b['bench']}")
        out.append("")
        if b.get("error"):
            out.append(f"Failed: {b['error']}")
            out.append("")
            continue
        params = ", ".join(f"{k} {v}" for k, v in b.get("params", {}).items())
        if params:
            out.append(f"Parameters: {params}.")
            out.append("")
        out.append("| group | metric | ours | peer | peer is | ratio |")
        out.append("| --- | --- | ---: | ---: | --- | ---: |")
        for r in b["rows"]:
            u = r["unit"]
            peer = f"{fmt(r['peer'])} {u}" if r.get("peer") is not None else "–"
            q = ratio(r)
            out.append(
                f"| {r['group']} | {r['metric']} | {fmt(r['ours'])} {u} | {peer} | "
                f"{r.get('peer_name') or '–'} | {(fmt(q) + 'x') if q else '–'} |"
            )
        out.append("")
    return "\n".join(out) + "\n"


def chart(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = []  # (title, rows)
    for b in results["benches"]:
        seen = {}
        for r in b.get("rows", []):
            if r.get("ours") is None:
                continue
            key = (r["group"], r["unit"])
            seen.setdefault(key, []).append(r)
        for (g, u), rows in seen.items():
            groups.append((f"{g} ({u})", rows))
    if not groups:
        raise SystemExit("bench-chart: no figures to draw")
    cols = 3
    nrows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.2 * cols, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, (title, rows) in zip(axes.flat, groups):
        labels = [r["metric"] for r in rows]
        ours = [r["ours"] for r in rows]
        peers = [r["peer"] if r.get("peer") is not None else 0 for r in rows]
        has_peer = any(r.get("peer") is not None for r in rows)
        ys = range(len(rows))
        h = 0.38 if has_peer else 0.6
        ax.barh([y - (h / 2 if has_peer else 0) for y in ys], ours, h, label="ours",
                color="#2b7bba")
        if has_peer:
            names = sorted({r["peer_name"] for r in rows if r.get("peer_name")})
            ax.barh([y + h / 2 for y in ys], peers, h, label=" / ".join(names), color="#e08a2c")
        vals = [v for v in ours + peers if v and v > 0]
        if vals and max(vals) / min(vals) > 20:
            ax.set_xscale("log")
        top = max(vals) if vals else 1
        ax.set_xlim(right=top * (8 if ax.get_xscale() == "log" else 1.45))
        for y, r in zip(ys, rows):
            q = ratio(r)
            txt = fmt(r["ours"]) + (f"  ({fmt(q)}x)" if q else "")
            ax.text(r["ours"], y - (h / 2 if has_peer else 0), " " + txt, va="center", fontsize=8)
            if r.get("peer") is not None:
                ax.text(r["peer"], y + h / 2, " " + fmt(r["peer"]), va="center", fontsize=8,
                        color="#8a4a00")
        ax.set_yticks(list(ys))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        better = rows[0]["better"]
        ax.set_title(f"{title}, {better} is better", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.legend(fontsize=7, loc="lower right")
    m = results["machine"]
    fig.suptitle(
        f"cni-rs benchmarks, ours vs peer (ratio in brackets: times better) - {m['cpu']}, "
        f"{m['cores']} cores, kernel {m['kernel']}, {m['date']} ({m['mode']})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)


BEGIN = "<!-- bench-report:begin (written by scripts/bench-report.sh) -->"
END = "<!-- bench-report:end -->"


def update_readme(readme, md, png):
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"bench-chart: {readme} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    # The results file's own title is the README's section title already; tables one level down.
    body = md.split("\n", 2)[2].replace("\n## ", "\n#### ")
    block = f"{BEGIN}\n\n![benchmark chart]({png})\n\n{body.strip()}\n\n{END}"
    readme.write_text(head + block + tail)


def main():
    args = sys.argv[1:]
    readme = None
    if args[:1] == ["--readme"]:
        readme, args = Path(args[1]), args[2:]
    if len(args) < 2:
        raise SystemExit(__doc__)
    out = Path(args[0])
    machine = json.loads(Path(args[1]).read_text())
    benches = []
    for p in args[2:]:
        p = Path(p)
        if not p.exists() or p.stat().st_size == 0:
            benches.append({"bench": p.stem, "error": "no figures (the bench failed; see its log)",
                            "rows": []})
            continue
        benches.append(json.loads(p.read_text()))
    results = {"machine": machine, "benches": benches}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    chart(results, out / "results.png")
    print(f"wrote {out}/results.json, results.md, results.png")
    if readme:
        png = (out / "results.png").resolve().relative_to(readme.resolve().parent)
        update_readme(readme, markdown(results), png)
        print(f"updated {readme}")


if __name__ == "__main__":
    main()
