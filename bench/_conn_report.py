"""The connections part's summaries, targets, Markdown tables and plots.

Every figure comes from the blocks bench/connections.py recorded: a block is
one bounded loadgen run (see loadgen.c for its fields) plus what was read around it.
Ratios are taken per round between blocks of the same round and workload, then
summarized as median and range ("spread") over rounds: {"median", "min", "max"}.

Targets (issue 12), judged on the median of the per-round ratios to `direct` in the
same run, for every bpf mode (`bpfgen_bpf*`): see TARGETS. A target passes when the
median meets it; the range is printed next to it, so a pass with a range across the
line reads as what it is.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Block = dict[str, Any]
Spread = dict[str, float]

STALL_CAUSES = ("syn_retransmit", "rst", "data_stall", "other")
FAIL_CAUSES = ("timeout", "rst", "other")
TCP_COUNTERS = ("TcpExtTCPSynRetrans", "TcpRetransSegs", "TcpExtTCPTimeouts")
# bpfgen's counters shown in the tables (every counter's movement is in results.json).
SHOWN_COUNTERS = ("dnat_new", "snat_new", "reclaimed", "drop_exhausted", "drop_map_full",
                  "redirect", "fib_fallback", "xdp_to_tc")  # fmt: skip


def is_bpf(mode: str) -> bool:
    return mode.startswith("bpfgen_bpf")


def _rate(b: Block) -> float:
    return float(b["ok"]) / float(b["elapsed_s"])


def _cpu_us(b: Block, key: str = "own_cpu_s") -> float:
    return 1e6 * float(b[key]) / max(1, int(b["ok"]))


def spread(values: Iterable[float]) -> Spread:
    v = list(values)
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def _over(b: Block) -> int:
    return sum(int(n) for n in b.get("over_200ms", {}).values())


# Besides the rate: figures whose per-round ratio to the reference mode is summarized too.
RATIO_FIGURES: dict[str, Callable[[Block], float]] = {
    "p50": lambda b: float(b["p50_us"]),
    "p99": lambda b: float(b["p99_us"]),
    "cpu": _cpu_us,
}


def windows(res: Block, window_s: int, seconds: float) -> list[dict[str, float]]:
    """A sustained block's complete windows of `window_s` seconds: start, connections/s
    and failures/s (loadgen's per-second counts, by completion time)."""
    ok, failed = res.get("per_s_ok", []), res.get("per_s_failed", [])
    out = []
    for i in range(int(seconds // window_s)):
        lo, hi = i * window_s, (i + 1) * window_s
        out.append({"t0": lo, "cps": sum(ok[lo:hi]) / window_s,
                    "failed_per_s": sum(failed[lo:hi]) / window_s})  # fmt: skip
    return out


def _sum_dicts(dicts: Iterable[dict[str, int] | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            out[k] = out.get(k, 0) + int(v)
    return out


def _programs(bs: list[Block]) -> list[dict[str, Any]]:
    """Per program over blocks: run counts and run time summed, per completed connection;
    the range of ns per connection over the blocks."""
    by: dict[str, dict[str, Any]] = {}
    for b in bs:
        for p in b.get("progs", []):
            row = by.setdefault(
                p["name"],
                {
                    "program": p["name"],
                    "hooks": p["hooks"],
                    "runs": 0,
                    "ns": 0,
                    "conns": 0,
                    "per_block": [],
                },
            )
            row["runs"] += p["runs"]
            row["ns"] += p["ns"]
            row["conns"] += int(b["ok"])
            if p["ns_per_conn"] is not None:
                row["per_block"].append(p["ns_per_conn"])
    for row in by.values():
        n = row["conns"]
        row["runs_per_conn"] = row["runs"] / n if n else None
        row["ns_per_run"] = row["ns"] / row["runs"] if row["runs"] else None
        row["ns_per_conn"] = row["ns"] / n if n else None
        row["ns_per_conn_blocks"] = spread(row.pop("per_block")) if n else None
    return sorted(by.values(), key=lambda r: str(r["program"]))


def paired(
    blocks: list[Block],
    mode: str,
    ref: str,
    workload: str,
    f: Callable[[Block], float],
    clean: bool = False,
) -> list[float]:
    """f(mode's block) / f(ref's block) for each round both ran `workload` in; `clean`:
    only rounds in which neither block failed a connection (latency percentiles cover
    completed connections only: a block that failed most has the few that got through)."""
    by_round = {(b["mode"], b["round"]): b for b in blocks if b["workload"] == workload}
    out = []
    for (m, rnd), b in sorted(by_round.items(), key=lambda kv: str(kv[0])):
        r = by_round.get((ref, rnd))
        if m != mode or r is None or f(r) <= 0 or (clean and (b["failed"] or r["failed"])):
            continue
        out.append(f(b) / f(r))
    return out


def summarize(blocks: Iterable[Block], reference: dict[str, str]) -> list[dict[str, Any]]:
    """One row per (path, mode, workload): medians and ranges over rounds, and the
    per-round ratios (rate, p50, p99, CPU per connection) against `reference[path]` (a
    mode) of the same workload."""
    blocks = list(blocks)
    groups: dict[tuple[str, str, str], list[Block]] = {}
    for b in blocks:
        groups.setdefault((b["path"], b["mode"], b["workload"]), []).append(b)
    rows = []
    for (path, mode, workload), bs in groups.items():
        ref_mode = reference.get(path, reference.get("*", ""))
        ref = {
            b["round"]: b
            for b in blocks
            if b["mode"] == ref_mode and b["workload"] == workload
            and (b["path"] == path or path not in reference)
        }  # fmt: skip
        pairs = [(b, ref[b["round"]]) for b in bs if b["round"] in ref]
        ratios = [_rate(b) / _rate(r) for b, r in pairs if _rate(r) > 0]
        others = {
            name: [float(f(b)) / float(f(r)) for b, r in pairs if f(r) > 0]
            for name, f in RATIO_FIGURES.items()
        }
        done = [b for b in bs if b["ok"]]  # latency figures exist only where some completed
        row: dict[str, Any] = {
            "path": path,
            "mode": mode,
            "workload": workload,
            "rounds": len(bs),
            "ok": sum(int(b["ok"]) for b in bs),
            "failed": sum(int(b["failed"]) for b in bs),
            "mismatched": sum(int(b["mismatched"]) for b in bs),
            "rate": spread(_rate(b) for b in bs),
            "cpu_us_per_conn": spread(_cpu_us(b) for b in bs),
            "machine_cpu_us_per_conn": spread(_cpu_us(b, "busy_s") for b in bs),
            "vs": ref_mode,
            "ratio": spread(ratios) if ratios else None,
            **{f"{n}_ratio": spread(v) if v else None for n, v in others.items()},
            "over_200ms": _sum_dicts(b.get("over_200ms") for b in bs),
            "failed_by_cause": _sum_dicts(b.get("failed_by_cause") for b in bs),
            "tcp_client": _sum_dicts(b.get("tcp_client") for b in bs),
            "tcp_backend": _sum_dicts(b.get("tcp_backend") for b in bs),
            "backends_seen": max(int(b.get("backends_seen", 0)) for b in bs),
        }
        for key in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us"):
            row[key] = spread(float(b[key]) for b in done) if done and key in done[0] else None
        for part in ("connect_us", "rr_us"):
            if done and part in done[0]:
                row[part] = {p: spread(float(b[part][p]) for b in done)
                             for p in ("p50", "p99", "max")}  # fmt: skip
        if any("bpf_counters" in b for b in bs):
            row["bpf_counters"] = _sum_dicts(b.get("bpf_counters") for b in bs)
            row["programs"] = _programs(bs)
        if workload == "sustained":
            wins = [w for b in bs for w in b.get("windows", [])]
            row["windows"] = wins
            row["window_cps"] = spread(w["cps"] for w in wins) if wins else None
        rows.append(row)
    return rows


# --- targets --------------------------------------------------------------------------------

# (name, workload, figure, reference mode, comparison, threshold); figure "rate", "p50",
# "p99" are per-round ratios; "over_200ms" and "failed" are counts over every block of
# the mode (sustained included).
TARGETS: tuple[tuple[str, str, str, str, str, float], ...] = (
    ("short CPS vs direct", "short", "rate", "direct", ">=", 0.98),
    ("sustained CPS vs direct", "sustained", "rate", "direct", ">=", 0.98),
    ("keep-alive RPS vs direct", "keepalive", "rate", "direct", ">=", 1.03),
    ("short p50 vs direct", "short", "p50", "direct", "<=", 1.03),
    ("short p99 vs direct", "short", "p99", "direct", "<=", 1.03),
    ("sustained p50 vs direct", "sustained", "p50", "direct", "<=", 1.03),
    ("sustained p99 vs direct", "sustained", "p99", "direct", "<=", 1.03),
    ("short CPS vs conntrack_nat (floor)", "short", "rate", "conntrack_nat", ">=", 1.0),
    ("sustained CPS vs conntrack_nat (floor)", "sustained", "rate", "conntrack_nat", ">=", 1.0),
    ("connections over 200 ms", "*", "over_200ms", "", "==", 0),
    ("failed connections", "*", "failed", "", "==", 0),
)
FIGURES: dict[str, Callable[[Block], float]] = {"rate": _rate, **RATIO_FIGURES}


def _window_ratios(blocks: list[Block], mode: str, ref: str) -> list[float]:
    """Sustained: window i of `mode` over window i of `ref` (same position, not the same
    time: the modes ran one after the other)."""

    def wins(m: str) -> list[float]:
        return [w["cps"] for b in blocks if b["mode"] == m and b["workload"] == "sustained"
                for w in b.get("windows", [])]  # fmt: skip

    return [a / b for a, b in zip(wins(mode), wins(ref), strict=False) if b > 0]


def _judge(op: str, value: float, threshold: float) -> bool:
    return {">=": value >= threshold, "<=": value <= threshold, "==": value == threshold}[op]


def targets(host: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bpf mode against TARGETS, and (pass None: information) the conntrack floor's
    own ratio to direct and each bpf variant's short rate against bpfgen_bpf (tc, one
    backend): what 4/64 backends or XDP change."""
    blocks: list[Block] = host["blocks"]
    modes = sorted({b["mode"] for b in blocks})
    out: list[dict[str, Any]] = []
    for mode in [m for m in modes if is_bpf(m)]:
        mine = [b for b in blocks if b["mode"] == mode]
        for name, workload, fig, ref, op, threshold in TARGETS:
            if workload == "*":
                n = sum(_over(b) if fig == "over_200ms" else int(b["failed"]) for b in mine)
                value: Spread | None = {"median": n, "min": n, "max": n}
            else:
                ratios = paired(blocks, mode, ref, workload, FIGURES[fig], clean=fig != "rate")
                rounds = (len(ratios), len(paired(blocks, mode, ref, workload, FIGURES[fig])))
                if workload == "sustained" and fig == "rate":
                    # One sustained block per mode: the range is over its windows.
                    wr = _window_ratios(blocks, mode, ref)
                    value = {**spread(wr or ratios), "median": ratios[0]} if ratios else None
                else:
                    value = spread(ratios) if ratios else None
            out.append({
                "mode": mode, "target": name, "workload": workload, "figure": fig,
                "vs": ref, "op": op, "threshold": threshold, "value": value,
                "rounds_judged": None if workload == "*" else rounds,
                "pass": None if value is None else _judge(op, value["median"], threshold),
            })  # fmt: skip
    info = [("conntrack_nat", "direct")] + [
        (m, "bpfgen_bpf") for m in modes if is_bpf(m) and m != "bpfgen_bpf"
    ]
    for mode, ref in info:
        for workload in ("short", "keepalive"):
            ratios = paired(blocks, mode, ref, workload, _rate, clean=True)
            if ratios:
                out.append({"mode": mode, "target": f"{workload} rate vs {ref} (information)",
                            "workload": workload, "figure": "rate", "vs": ref, "op": "",
                            "threshold": None, "value": spread(ratios), "pass": None})  # fmt: skip
    return out


def _verdict(t: dict[str, Any]) -> str:
    return "—" if t["pass"] is None else ("pass" if t["pass"] else "**miss**")


def _value(t: dict[str, Any]) -> str:
    judged, rounds = t.get("rounds_judged") or (0, 0)
    if t["value"] is None:
        return "no round without failures" if rounds else "no data"
    if t["figure"] in ("over_200ms", "failed"):
        return f"{int(t['value']['median']):,}"
    part = f" [{judged} of {rounds} rounds]" if judged < rounds else ""
    return fmt(t["value"], 2, "×") + part


def target_lines(ts: list[dict[str, Any]]) -> list[str]:
    """One line per target, for the progress log."""
    out = []
    for t in ts:
        goal = f" (target {t['op']} {t['threshold']:g})" if t["op"] else ""
        out.append(f"{t['mode']}: {t['target']}: {_value(t).replace('**', '')}{goal} "
                   f"{_verdict(t).replace('**', '').upper()}")  # fmt: skip
    return out


# --- node state and problems ----------------------------------------------------------------


def node_state(blocks: list[Block]) -> dict[str, dict[str, Any]]:
    """Per host mode: the node's `conntrack -C` after its last block and the range over
    its blocks, and (bpf modes) bpfgen's counters summed over its blocks and its maps'
    fill after the last block and at most."""
    out: dict[str, dict[str, Any]] = {}
    for b in blocks:  # in the order they ran
        m = out.setdefault(b["mode"], {"conntrack_min": b["conntrack_entries"],
                                       "conntrack_max": 0})  # fmt: skip
        m["conntrack_end"] = b["conntrack_entries"]
        m["conntrack_min"] = min(m["conntrack_min"], b["conntrack_entries"])
        m["conntrack_max"] = max(m["conntrack_max"], b["conntrack_entries"])
        if "bpf_counters" in b:
            m["bpf_counters"] = _sum_dicts([m.get("bpf_counters"), b["bpf_counters"]])
            m["map_entries_end"] = b["map_entries"]
            peak = m.setdefault("map_entries_max", {})
            for name, n in b["map_entries"].items():
                peak[name] = max(peak.get(name, 0), int(n or 0))
    return out


def problems(result: dict[str, Any]) -> list[str]:
    """Failed connections, a backend that saw the wrong source, conntrack entries or no
    eBPF SNAT in bpfgen's modes."""
    out = []
    for where in ("host", "vm"):
        for b in result[where].get("blocks", []):
            what = f"{where} round {b['round']} {b['mode']} {b['path']} {b['workload']}"
            if b["failed"] or b["mismatched"] or not b["ok"]:
                causes = ", ".join(f"{k} {v}" for k, v in b.get("failed_by_cause", {}).items()
                                   if v)  # fmt: skip
                out.append(
                    f"{what}: {b['ok']} ok, {b['failed']} failed ({causes or 'no cause'}), "
                    f"{b['mismatched']} saw another source than {b['expect_peer']} "
                    f"({b['first_error']})"
                )
            if b["mode"] == "bpfgen_ipvs" and b["conntrack_entries"]:
                out.append(f"{what}: {b['conntrack_entries']} conntrack entries in the node")
            if b["mode"] == "bpfgen_ipvs" and b["path"] == "nodeport" and not b.get("snat_new"):
                out.append(f"{what}: bpfgen's snat_new counter did not move")
            if is_bpf(b["mode"]):
                c = b["bpf_counters"]
                if b["conntrack_entries"]:
                    out.append(f"{what}: {b['conntrack_entries']} conntrack entries in the node")
                if c.get("fib_fallback") or (b["ok"] and not c.get("redirect")):
                    out.append(f"{what}: fib_fallback {c.get('fib_fallback')} (must be 0), "
                               f"redirect {c.get('redirect')} (must move)")  # fmt: skip
    return out


# --- tables ---------------------------------------------------------------------------------


def fmt(sp: Spread | None, digits: int = 0, suffix: str = "") -> str:
    """median (min–max), or — without data."""
    if sp is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(sp['median'])}{suffix} ({f.format(sp['min'])}–{f.format(sp['max'])})"


def md_table(columns: list[str], rows: Iterable[list[str]], text_columns: int) -> list[str]:
    """Markdown lines: the first `text_columns` columns left-aligned, the figures right."""
    align = ["---"] * text_columns + ["---:"] * (len(columns) - text_columns)
    return [f"| {' | '.join(columns)} |", f"|{'|'.join(align)}|",
            *(f"| {' | '.join(row)} |" for row in rows)]  # fmt: skip


WORKLOAD_ORDER = {"short": 0, "sustained": 1, "keepalive": 2}


def order(r: dict[str, Any]) -> tuple[int, str, str]:
    return WORKLOAD_ORDER.get(r["workload"], 9), r["path"], r["mode"]


def unit(r: dict[str, Any]) -> str:
    return "req/s" if r["workload"] == "keepalive" else "conn/s"


def rates_md(rows: list[dict[str, Any]]) -> list[str]:
    columns = ["workload", "path", "mode", "rate", "p50 µs", "p99 µs", "CPU µs/conn",
               "machine CPU µs/conn", "rate ratio", "ok / failed / wrong source"]  # fmt: skip
    body = []
    for r in sorted(rows, key=order):
        ratio = "1 (reference)" if r["mode"] == r["vs"] else fmt(r["ratio"], 2, "×")
        body.append([
            r["workload"], r["path"], r["mode"], f"{fmt(r['rate'])} {unit(r)}",
            fmt(r["p50_us"]), fmt(r["p99_us"]), fmt(r["cpu_us_per_conn"]),
            fmt(r.get("machine_cpu_us_per_conn")), f"{ratio} vs {r['vs']}" if r["vs"] else "—",
            f"{r['ok']:,} / {r['failed']} / {r['mismatched']}",
        ])  # fmt: skip
    return md_table(columns, body, 3)


def ratios_md(rows: list[dict[str, Any]]) -> list[str]:
    """Per-round ratios to the reference mode (median (min–max) over rounds)."""
    body = [
        [r["workload"], r["path"], r["mode"], r["vs"],
         *(fmt(r.get(k), 2, "×") for k in ("ratio", "p50_ratio", "p99_ratio", "cpu_ratio"))]
        for r in sorted(rows, key=order) if r["ratio"] is not None and r["mode"] != r["vs"]
    ]  # fmt: skip
    return md_table(["workload", "path", "mode", "vs", "rate", "p50", "p99", "CPU/conn"], body, 4)


def latency_md(rows: list[dict[str, Any]]) -> list[str]:
    """Latency to the maximum, with the connect() and request/answer parts (µs)."""
    body = []
    for r in sorted(rows, key=order):
        parts = [f"{fmt(x['p99'])} / {fmt(x['max'])}" if x else "—"
                 for x in (r.get("connect_us"), r.get("rr_us"))]  # fmt: skip
        body.append([r["workload"], r["mode"], *(fmt(r[k]) for k in (
            "p50_us", "p90_us", "p99_us", "p999_us", "max_us")), *parts])  # fmt: skip
    columns = ["workload", "mode", "p50", "p90", "p99", "p99.9", "max", "connect p99 / max",
               "request/answer p99 / max"]  # fmt: skip
    return md_table(columns, body, 2)


def stalls_md(rows: list[dict[str, Any]]) -> list[str]:
    """Requests over 200 ms by cause, failures by cause, TCP retransmissions (sums)."""
    groups = (("over_200ms", STALL_CAUSES), ("failed_by_cause", FAIL_CAUSES),
              ("tcp_client", TCP_COUNTERS), ("tcp_backend", TCP_COUNTERS))  # fmt: skip
    body = [[r["workload"], r["mode"], *(" / ".join(f"{r[key].get(k, 0):,}" for k in keys)
                                         for key, keys in groups)]
            for r in sorted(rows, key=order)]  # fmt: skip
    columns = ["workload", "mode", "over 200 ms: syn_retransmit / rst / data_stall / other",
               "failed: timeout / rst / other", "client SynRetrans / RetransSegs / Timeouts",
               "backend SynRetrans / RetransSegs / Timeouts"]  # fmt: skip
    return md_table(columns, body, 2)


def breakdown_md(rows: list[dict[str, Any]]) -> list[str]:
    """Per bpf mode and workload, per program: runs, ns per run, ns per connection."""
    body = []
    for r in sorted(rows, key=order):
        for p in r.get("programs", []):
            figs = [p["runs_per_conn"], p["ns_per_run"], p["ns_per_conn"]]
            body.append([r["workload"], r["mode"], f"{p['program']} ({', '.join(p['hooks'])})",
                         *("—" if f is None else f"{f:,.{1 if i == 0 else 0}f}"
                           for i, f in enumerate(figs)), fmt(p["ns_per_conn_blocks"])])  # fmt: skip
    columns = ["workload", "mode", "program (hooks)", "runs/conn", "ns/run", "ns/conn",
               "ns/conn over blocks"]  # fmt: skip
    return md_table(columns, body, 3)


def windows_md(rows: list[dict[str, Any]]) -> list[str]:
    """Sustained: connections/s per window (failed/s where any)."""
    sus = [r for r in rows if r["workload"] == "sustained" and r.get("windows")]
    if not sus:
        return []
    wins = sus[0]["windows"]
    step = wins[1]["t0"] - wins[0]["t0"] if len(wins) > 1 else 0
    body = [[r["mode"], *(f"{w['cps']:,.0f}" + (f" ({w['failed_per_s']:,.1f} failed/s)"
                                               if w["failed_per_s"] else "")
                          for w in r["windows"])] for r in sorted(sus, key=order)]  # fmt: skip
    return md_table(["mode", *(f"{w['t0']}–{w['t0'] + step} s" for w in wins)], body, 1)


def targets_table(result: dict[str, Any]) -> str:
    """The host targets of issue 12 (printed after every part's tables)."""
    return "\n".join(targets_md(result["host"].get("targets", []))) + "\n"


def targets_md(ts: list[dict[str, Any]]) -> list[str]:
    """The targets as a matrix: one row per target, one column per bpf mode (value:
    median (min–max), verdict); then the information rows (no goal)."""
    modes = list(dict.fromkeys(t["mode"] for t in ts if t["op"]))
    cell = {(t["target"], t["mode"]): t for t in ts if t["op"]}
    body = [[name, f"{op} {threshold:g}",
             *(f"{_value(c)} {_verdict(c)}" if (c := cell.get((name, m))) else "—"
               for m in modes)] for name, *_, op, threshold in TARGETS]  # fmt: skip
    out = md_table(["target", "goal", *modes], body, 2)
    info = [[t["mode"], t["target"].removesuffix(" (information)"), _value(t)]
            for t in ts if not t["op"]]  # fmt: skip
    if info:
        out += ["", *md_table(["mode", "compared (information)", "median (min–max) over rounds"],
                              info, 2)]  # fmt: skip
    return out


def node_md(state: dict[str, dict[str, Any]]) -> list[str]:
    body = []
    for mode, st in state.items():
        c = st.get("bpf_counters")
        end, peak = st.get("map_entries_end") or {}, st.get("map_entries_max") or {}
        nat = next((k for k in sorted(end) if k.startswith("bpfgen_nat")), None)
        body.append([mode, f"{st['conntrack_end']:,}",
                     f"{st['conntrack_min']:,}–{st['conntrack_max']:,}",
                     *(f"{c.get(k, 0):,}" if c else "—" for k in SHOWN_COUNTERS),
                     f"{end[nat] or 0:,} ({peak.get(nat, 0):,})" if nat else "—"])  # fmt: skip
    columns = ["mode", "conntrack -C at end", "over blocks", *SHOWN_COUNTERS,
               "sessions at end (max)"]  # fmt: skip
    return md_table(columns, body, 1)


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", title, "", *lines] if lines else []


def table(result: dict[str, Any]) -> str:
    host, s, vm = result["host"], result["settings"], result["vm"]
    rows = host["summary"]
    lines = [
        f"Host kernel {host['kernel']} {host.get('kernel_version', '')} (median (min–max) over "
        f"{s['rounds']} interleaved rounds; ratio per round; sustained: one block of "
        f"{s.get('sustained_s', 0):g} s per mode, ranges over its {s.get('window_s', 0)}-s "
        "windows where noted):",
        "",
        *rates_md(rows),
        *_section("Ratios to direct, per round (median (min–max) over rounds):", ratios_md(rows)),
        *_section("Latency (µs; median (min–max) over blocks of each block's percentile):",
                  latency_md(rows)),
        *_section("Stalls and failures (sums over blocks; TCP counters from `nstat` in the "
                  "client's and the backend's namespace):", stalls_md(rows)),
        *_section("Where a connection's time goes in the bpf modes (kernel BPF statistics, "
                  "run_time_ns / run_cnt over each block, per completed connection):",
                  breakdown_md(rows)),
        *_section("Sustained short connections, connections/s per window:", windows_md(rows)),
        *_section("Node namespace: `conntrack -C` (after the last block; min–max over "
                  "blocks), bpfgen's counters summed over its blocks, its session map's "
                  "entries:", node_md(host["node_state"])),
        "",
    ]  # fmt: skip
    if "skipped" in vm:
        lines.append(f"VM (6.1, IPVS): skipped ({vm['skipped']}).")
    else:
        lines += [
            f"Debian 6.1 in the VM (TCG, {vm['cpus']} vCPUs; "
            f"{s['vm']['rounds']} interleaved rounds; "
            f"{vm.get('other_qemus_at_boot', 0)} other qemu process(es) on the host at boot):",
            "",
            *rates_md(vm["summary"]),
            *_section(
                "Ratios to ipvs_conntrack, per round (median (min–max) over rounds):",
                ratios_md(vm["summary"]),
            ),
        ]
    return "\n".join(lines) + "\n"


# --- plots ----------------------------------------------------------------------------------


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [("host", result["host"]["summary"])]
    if "summary" in result["vm"]:
        sections.append(("vm (6.1, TCG)", result["vm"]["summary"]))
    fig, axes = plt.subplots(1, len(sections), figsize=(7 * len(sections), 4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], sections, strict=True):
        rows = sorted(
            (r for r in rows if r["workload"] == "short"), key=lambda r: (r["path"], r["mode"])
        )
        labels = [f"{r['path']}\n{r['mode']}" for r in rows]
        med = [r["rate"]["median"] for r in rows]
        err = [
            [m - r["rate"]["min"] for m, r in zip(med, rows, strict=True)],
            [r["rate"]["max"] - m for m, r in zip(med, rows, strict=True)],
        ]
        ax.bar(range(len(rows)), med, yerr=err, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(rows)), labels, fontsize=6)
        ax.set_ylabel("short connections / s (median, min–max)")
        ax.set_title(f"connections: {title}")
    fig.tight_layout()
    paths = [out_dir / "connections.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    sustained = [r for r in result["host"]["summary"] if r["workload"] == "sustained"]
    if sustained:
        fig, ax = plt.subplots(figsize=(8, 4))
        for r in sorted(sustained, key=lambda r: str(r["mode"])):
            wins = r.get("windows") or []
            ax.plot([w["t0"] for w in wins], [w["cps"] for w in wins], marker=".",
                    label=r["mode"])  # fmt: skip
        ax.set_xlabel("seconds into the mode's sustained block (window start)")
        ax.set_ylabel("short connections / s")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        ax.set_title("connections: sustained, per window")
        fig.tight_layout()
        paths.append(out_dir / "connections_sustained.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
