"""Part 5 of `make bench`: `bpfgen agent`, from an API event to the map a packet reads.

For 10, 1,000 and 10,000 Services (4 endpoints each, one TCP port, ClusterIP), in
the bpf mode with an image build (the node's fast path, docs/agent.md "Endpoint
changes"), in a namespace of its own (bench/_netns.py), against the API server
stand-in of the tests (tests/e2e/fake_apiserver.py, 127.0.0.1; the client library
is the real one):

- **cold start**: from starting the agent process to its first convergence's
  record (list both kinds, compile with a warm object cache, `up`, every map
  written), and the agent's RSS then and at the end (VmRSS, VmHWM); the
  convergences run in a child process each (bpfgen/agent.py `full_path`), whose
  largest RSS is reported apart;
- **change-to-dataplane latency**: one endpoint of a random Service replaced by a
  new address, one change at a time; the time from the stand-in's `put` (the event
  is sent) until the new backend's entry is in the live `bpfgen_svc_members` and
  `bpfgen_svc_backends` maps (what a packet reads), polled every 0.5 ms;
  p50/p99/max over the changes;
- **a burst of 1,000 endpoint changes** (1,000 Services, fewer when there are
  fewer), put back to back: the time until the last is visible, the updates and
  map entries the agent wrote;
- **catch-up**: the full path the agent runs once the cluster is quiet; its
  duration and `drift` (the entries its sync still had to write: none expected).

Timeouts, ranges and sizes are the defaults a user gets; only `--catchup` is
shortened to 3 s so that a round ends sooner (the catch-up's length is not what
is measured).
"""

from __future__ import annotations

import gc
import json
import os
import queue
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bpfgen_runtime.contract import layouts

Progress = Callable[[str], None]

SIZES = (10, 1000, 10_000)
QUICK_SIZES = (10, 100)
CHANGES = 100  # sequential single changes per size
QUICK_CHANGES = 10
BURST = 1000
ENDPOINTS = 4
RECORD_SECONDS = 600.0  # the longest wait for one agent record (a cold start at 10k)

NODE_YAML = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {name: node-a, addresses: [198.18.0.2], podCIDR: 198.19.1.0/24}
cluster: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.128.0/17}
interfaces:
  - {name: up0, role: uplink, hook: tc}
  - {name: "pv*", role: pods}
datapath: {mode: bpf, scheduler: maglev}
snat: {portRange: [20000, 29999]}
"""

SVC_BASE = int(IPv4Address("198.18.128.10"))
POD_BASE = int(IPv4Address("198.19.2.0"))  # endpoints on other nodes (198.19.1.0/24 is ours)


def objects(n: int) -> list[dict[str, Any]]:
    """n Services with one slice of ENDPOINTS ready endpoints each, as kubectl shows them."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        name = f"svc-{i}"
        ip = str(IPv4Address(SVC_BASE + i))
        out.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": "bench", "uid": f"u-{i}",
                                 "creationTimestamp": "2026-01-01T00:00:00Z"},
                    "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                        "targetPort": 8080}]}})  # fmt: skip
        out.append(endpoint_slice(i, [pod(i * ENDPOINTS + e) for e in range(ENDPOINTS)]))
    return out


def pod(k: int) -> str:
    return str(IPv4Address(POD_BASE + k % 60000))


def endpoint_slice(i: int, addresses: list[str]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{i}-abcde", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}, "nodeName": "node-b"}
                          for a in addresses]}  # fmt: skip


class AgentProcess:
    """The agent as the CLI runs it, its JSON records read on a thread."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)  # fmt: skip
        self.records: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []  # every record taken, in order
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.records.put((time.monotonic(), json.loads(line)))

    def next(self, event: str, timeout: float = RECORD_SECONDS) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, record = self.records.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(record)
            if record["event"] == event:
                return at, record
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise RuntimeError(f"agent: no {event} record within {timeout:g} s {err}")

    def drain(self) -> None:
        """Take the records that came so far into `seen`."""
        while True:
            try:
                self.seen.append(self.records.get_nowait()[1])
            except queue.Empty:
                return

    def rss_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Maps:
    """The live service tables, read as a packet's lookups read them."""

    def __init__(self, pin_dir: str) -> None:
        from bpfgen_runtime.pins import PinnedMap

        self.frontends = PinnedMap(os.path.join(pin_dir, "bpfgen_svc_frontends"))
        self.members = PinnedMap(os.path.join(pin_dir, "bpfgen_svc_members"))

    def frontend_id(self, i: int) -> int:
        key = layouts.FrontendKey(addr=layouts.be32(SVC_BASE + i), port=layouts.be16(80),
                                  proto=socket.IPPROTO_TCP)  # fmt: skip
        value = self.frontends.lookup(layouts.to_bytes(key))
        assert value is not None, f"svc-{i} has no frontend entry"
        return int(layouts.SvcValue.from_buffer_copy(value).id)

    def has_member(self, fid: int, address: str) -> bool:
        key = layouts.BackendMember(fid, layouts.be32(IPv4Address(address)), layouts.be16(8080))
        return self.members.lookup(layouts.to_bytes(key)) is not None

    def close(self) -> None:
        self.frontends.close()
        self.members.close()


def wait_visible(maps: Maps, wanted: list[tuple[int, str]], timeout: float = 60.0) -> float:
    """Poll until every (frontend id, address) is a member; the monotonic time then."""
    deadline = time.monotonic() + timeout
    left = list(wanted)
    while left:
        left = [w for w in left if not maps.has_member(*w)]
        now = time.monotonic()
        if not left:
            return now
        if now > deadline:
            raise RuntimeError(f"{len(left)} changes not visible after {timeout:g} s")
        time.sleep(0.0005)
    return time.monotonic()


def measure(n: int, changes: int, progress: Progress) -> dict[str, Any]:
    from bench._netns import Lab
    from tests.e2e.fake_apiserver import FakeApiServer

    rng = random.Random(n)
    with Lab(prefix="ba") as lab, FakeApiServer() as api:
        node_ns, peer = lab.ns("node"), lab.ns("peer")
        lab.veth(node_ns, "up0", peer, "eth0")
        lab.veth(node_ns, "pv1", peer, "pod0")
        lab.exec(node_ns, "ip", "addr", "add", "198.18.0.2/24", "dev", "up0")
        work = lab.workdir()
        (work / "bpffs").mkdir()
        from bpfgen_runtime.node import Options

        opts = Options(netns=node_ns, bpffs=str(work / "bpffs"), run_dir=str(work / "run"))
        lab.runtimes.append(opts)  # Lab.close runs `down`, also after a failure
        node = work / "node.yaml"
        node.write_text(NODE_YAML)
        progress(f"agent: {n:,} Services: putting {2 * n:,} objects")
        current: dict[int, list[str]] = {}
        for obj in objects(n):
            api.put(obj)
        for i in range(n):
            current[i] = [pod(i * ENDPOINTS + e) for e in range(ENDPOINTS)]
        # This process serves the stand-in's 2n objects and polls the maps: keep its
        # cyclic collector off them, as the agent does with its own (gc.freeze).
        gc.collect()
        gc.freeze()
        command = [sys.executable, "-m", "bpfgen", "agent", str(work / "build"), "--node",
                   str(node), "--kubeconfig", str(api.kubeconfig(work / "kubeconfig")),
                   "--json", "--netns", node_ns, "--build", "image", "--catchup", "3"]  # fmt: skip
        env = {**os.environ, "BPFGEN_BPFFS": opts.bpffs, "BPFGEN_RUN_DIR": opts.run_dir}
        agent = AgentProcess(command, env)
        try:
            at, first = agent.next("converge")
            if not first["ok"] or first.get("fast_path") != "on":
                raise RuntimeError(f"agent: first convergence: {first}")
            cold = at - agent.started
            rss_start = agent.rss_mib()
            progress(f"agent: {n:,} Services: cold start {cold:.2f} s, RSS {rss_start[0]:.0f} MiB")
            maps = Maps(opts.pin_dir())
            fresh = 60000  # addresses never used by objects(n)
            latencies: list[float] = []
            try:
                for _ in range(changes):
                    i = rng.randrange(n)
                    fid = maps.frontend_id(i)
                    fresh += 1
                    current[i][rng.randrange(ENDPOINTS)] = pod(fresh)
                    new = list(current[i])
                    t0 = time.monotonic()
                    api.put(endpoint_slice(i, new))
                    t1 = wait_visible(maps, [(fid, a) for a in new])
                    latencies.append(t1 - t0)
                    time.sleep(0.02)
                agent.drain()
                updates = [r for r in agent.seen if r["event"] == "update"]
                mark = len(agent.seen)
                fallbacks = [r for r in updates if not r["ok"]]
                burst_n = min(BURST, n)
                chosen = rng.sample(range(n), burst_n)
                wanted = []
                for i in chosen:
                    fresh += 1
                    current[i][0] = pod(fresh)
                    wanted.append((maps.frontend_id(i), current[i][0]))
                t0 = time.monotonic()
                for i in chosen:
                    api.put(endpoint_slice(i, current[i]))
                t_put = time.monotonic() - t0
                burst_seconds = wait_visible(maps, wanted, timeout=300) - t0
            finally:
                maps.close()
            _, catchup = agent.next("converge")
            burst_records = [r for r in agent.seen[mark:] if r["event"] == "update"]
            rss_end = agent.rss_mib()
        finally:
            agent.stop()
            gc.unfreeze()
        ms = sorted(x * 1000 for x in latencies)
        result = {
            "services": n,
            "endpoints_per_service": ENDPOINTS,
            "cold_start_s": round(cold, 3),
            "first_converge_s": first["seconds"],
            "rss_mib_after_start": round(rss_start[0], 1),
            "rss_mib_end": round(rss_end[0], 1),
            "rss_mib_peak": round(rss_end[1], 1),
            # the convergences' child processes (bpfgen/agent.py full_path): their largest
            "child_rss_mib_max": catchup.get("child_max_rss_mib"),
            "changes": changes,
            "latency_ms_p50": round(statistics.median(ms), 2),
            "latency_ms_p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
            "latency_ms_max": round(ms[-1], 2),
            "latency_ms": [round(x, 2) for x in ms],
            "agent_latency_ms_p50": round(
                statistics.median(r["latency"] * 1000 for r in updates if r["ok"]), 2
            )
            if len(updates) > len(fallbacks)
            else None,
            "updates": len(updates),
            "fallbacks": [r["fallback"] for r in fallbacks],
            "burst_changes": burst_n,
            "burst_put_s": round(t_put, 3),
            "burst_visible_s": round(burst_seconds, 3),
            "burst_updates": len([r for r in burst_records if r["ok"]]),
            "burst_entries": sum(r.get("entries", 0) for r in burst_records),
            "burst_fallbacks": [r["fallback"] for r in burst_records if not r["ok"]],
            "catchup_ok": catchup["ok"],
            "catchup_s": catchup["seconds"],
            "catchup_drift": catchup.get("drift"),
        }
        progress(
            f"agent: {n:,} Services: change to map p50 {result['latency_ms_p50']} ms, p99 "
            f"{result['latency_ms_p99']} ms, max {result['latency_ms_max']} ms; burst of "
            f"{burst_n} visible in {result['burst_visible_s']} s; catch-up "
            f"{result['catchup_s']} s, drift {result['catchup_drift']}"
        )
        return result


def run(out_dir: Path, *, quick: bool, progress: Progress) -> dict[str, Any]:
    del out_dir
    sizes = QUICK_SIZES if quick else SIZES
    changes = QUICK_CHANGES if quick else CHANGES
    rows = [measure(n, changes, progress) for n in sizes]
    problems = [
        f"{r['services']} Services: the catch-up wrote {r['catchup_drift']}"
        for r in rows
        if r["catchup_drift"]
    ] + [f"{r['services']} Services: catch-up failed" for r in rows if not r["catchup_ok"]]
    return {"rows": rows, "problems": problems}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| Services | cold start | agent RSS (start / end / peak) | convergence child peak RSS "
        "| change to map p50 / p99 / max | burst: changes, visible after, updates, entries "
        "| catch-up | drift |",
        "|---:|---:|---|---:|---|---|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['services']:,} | {r['cold_start_s']:.2f} s | {r['rss_mib_after_start']:.0f} / "
            f"{r['rss_mib_end']:.0f} / {r['rss_mib_peak']:.0f} MiB | "
            f"{r['child_rss_mib_max'] or 0:.0f} MiB | {r['latency_ms_p50']} / "
            f"{r['latency_ms_p99']} / {r['latency_ms_max']} ms | {r['burst_changes']:,}, "
            f"{r['burst_visible_s']} s, {r['burst_updates']}, {r['burst_entries']:,} | "
            f"{r['catchup_s']} s | {len(r['catchup_drift'] or [])} |"
        )
    return "\n".join(lines) + "\n"


def targets_table(result: dict[str, Any]) -> str:
    """Issue 16's targets at the largest size measured."""
    r = result["rows"][-1]
    rows = [
        ("change-to-dataplane p99", f"{r['latency_ms_p99']} ms", "<= 50 ms",
         r["latency_ms_p99"] <= 50),
        ("cold start", f"{r['cold_start_s']:.2f} s", "<= 5 s", r["cold_start_s"] <= 5),
        ("agent RSS (peak; its convergence child apart)", f"{r['rss_mib_peak']:.0f} MiB",
         "<= 150 MiB", r["rss_mib_peak"] <= 150),
    ]  # fmt: skip
    out = [
        f"At {r['services']:,} Services:",
        "",
        "| what | measured | goal | |",
        "|---|---|---|---|",
    ]
    out += [f"| {w} | {m} | {g} | {'pass' if ok else 'miss'} |" for w, m, g, ok in rows]
    return "\n".join(out) + "\n"


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    del result, out_dir
    return []
