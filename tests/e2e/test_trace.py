"""`bpfgen trace` in namespaces: the reasons it names for packets that get nowhere.

The e2e topology (tests/e2e/topology.py: a node, a client pod cp, one backend be1
serving HTTP) with a bpf-mode build up in the node. Three Services:

- `web`: VIP:80 -> be1:HTTP, answers (the control: nothing to report for it here);
- `empty`: no endpoints: svc_in answers a SYN with a RST itself (reject_no_backend),
  so no kernel drop carries it: trace reports bpfgen's counter;
- `closed`: VIP:80 -> be1:CLOSED, where nothing listens: DNAT and redirect work, the
  backend's kernel drops the SYN with NO_SOCKET (and answers a RST).

Each case starts `bpfgen trace --netns NODE --vip ... --count N --json` in the
background, waits for its "waiting for packets" line, then connects from cp until
the trace has printed N events and exited (both bounded). bcc (python3-bpfcc) is
required: without it the cases fail with the tracer's own message saying what to
install (never skip).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from vm.guest_ipvs import _port, _service, _slice

from bpfgen.compiler import compile_build
from bpfgen_runtime import netns
from bpfgen_runtime.node import Options
from bpfgen_runtime.tracer import import_bcc
from e2e.test_bpf_mode_host import node_up
from e2e.topology import CP_ADDR, NODE_ADDR, Topology, backend_addr, topology

pytestmark = [pytest.mark.root, pytest.mark.kernel]

HTTP, CLOSED = 8080, 9090
WEB_VIP, EMPTY_VIP, CLOSED_VIP, UNKNOWN_VIP = (
    "198.18.128.10", "198.18.128.60", "198.18.128.20", "198.18.128.99",
)  # fmt: skip
BPFGEN = Path(sys.executable).with_name("bpfgen")
START_SECONDS = 120.0  # bcc compiles the tracer (a few seconds; more on a busy host)
TRACE_SECONDS = 60.0
NODE_YAML = f"""\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {{name: node-trace, addresses: [{NODE_ADDR}], podCIDR: 198.19.1.0/24}}
cluster: {{podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.128.0/17}}
interfaces: [{{name: up0, role: uplink, hook: tc}}, {{name: "pv*", role: pods}}]
datapath: {{mode: bpf, scheduler: random}}
"""


def services_yaml() -> str:
    be1 = backend_addr(1)
    http = f"  - {{name: http, port: {HTTP}, protocol: TCP}}\n"
    closed = f"  - {{name: http, port: {CLOSED}, protocol: TCP}}\n"
    items = [
        _service("web", WEB_VIP, _port("http", 80, "TCP", HTTP)),
        _slice("web-1", "web", [(be1, True)], http),
        _service("empty", EMPTY_VIP, _port("http", 80, "TCP", HTTP)),
        _service("closed", CLOSED_VIP, _port("http", 80, "TCP", CLOSED)),
        _slice("closed-1", "closed", [(be1, True)], closed),
    ]
    return "apiVersion: v1\nkind: List\nitems:\n" + "".join(items)


@dataclass
class Node:
    topo: Topology
    opts: Options
    env: dict[str, str]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    work = tmp_path_factory.mktemp("trace")
    (work / "node.yaml").write_text(NODE_YAML)
    (work / "services.yaml").write_text(services_yaml())
    compile_build(work / "node.yaml", [work / "services.yaml"], work / "build", verify=False)
    bpffs = work / "bpffs"
    bpffs.mkdir()
    with topology("trc", 1, [HTTP]) as topo:
        opts = Options(netns=topo.node, bpffs=str(bpffs), run_dir=str(work / "run"), ipvs=False)
        env = dict(os.environ, BPFGEN_BPFFS=opts.bpffs, BPFGEN_RUN_DIR=opts.run_dir)
        with node_up(work / "build", opts):
            yield Node(topo, opts, env)


def _trace(n: Node, *args: str, preexec: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BPFGEN), "trace", "--netns", n.topo.node, "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=n.env,
        preexec_fn=preexec,
    )  # fmt: skip


def _wait_ready(proc: subprocess.Popen[str]) -> str:
    """stderr up to the "waiting for packets" line (read from the fd: a buffered reader
    would hide lines from select); fails with all of it otherwise."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + START_SECONDS
    while b"waiting for packets" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk and proc.poll() is not None:
            break
        seen += chunk
    if b"waiting for packets" in seen:
        return seen.decode()
    proc.kill()
    _, rest = proc.communicate(timeout=10)
    raise AssertionError(
        f"bpfgen trace did not start (exit {proc.returncode}):\n{seen.decode()}{rest}"
    )


def _connect(ns: str, addr: str, port: int) -> str:
    """One TCP connection attempt from namespace `ns`: how it ended."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(1.0)
        try:
            s.connect((addr, port))
            return "connected"
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return type(exc).__name__


def _events_while_connecting(n: Node, proc: subprocess.Popen[str], vip: str) -> list[Any]:
    """Connect from cp to vip:80 until the trace exits (its --count), bounded."""
    deadline = time.monotonic() + TRACE_SECONDS
    outcomes = []
    while proc.poll() is None and time.monotonic() < deadline:
        outcomes.append(_connect(n.topo.pods["cp"], vip, 80))
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}"
    events = [json.loads(line) for line in out.splitlines()]
    print(f"connections: {outcomes}\nstdout:\n{out}stderr:\n{err}")
    return events


def test_bcc_is_installed() -> None:
    """Not a skip: the tracer's own message says what to install (make setup does)."""
    import_bcc()


def test_service_without_endpoints_names_bpfgens_reject(node: Node) -> None:
    proc = _trace(node, "--vip", EMPTY_VIP, "--port", "80", "--count", "2")
    _wait_ready(proc)
    events = _events_while_connecting(node, proc, EMPTY_VIP)
    rejects = [e for e in events if e["kind"] == "bpfgen" and e["reason"] == "reject_no_backend"]
    assert rejects, events
    assert all(e["netns"] == node.topo.node and e["count"] >= 1 for e in rejects), rejects


def test_closed_backend_port_names_no_socket_and_the_tuple(node: Node) -> None:
    proc = _trace(node, "--vip", CLOSED_VIP, "--count", "2")
    _wait_ready(proc)
    events = _events_while_connecting(node, proc, CLOSED_VIP)
    be1 = backend_addr(1)
    drops = [e for e in events if e["kind"] == "drop" and e["reason"] == "NO_SOCKET"]
    assert drops, events
    for e in drops:
        assert e["netns"] == node.topo.pods["be1"], e  # the backend's kernel, after DNAT
        assert e["where"] == "tcp_v4_rcv" and e["protocol"] == "tcp", e
        assert e["src"].startswith(f"{CP_ADDR}:") and e["dst"] == f"{be1}:{CLOSED}", e


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started", ["normally", "with-sigint-ignored"])
def test_ctrl_c_ends_it_cleanly(node: Node, started: str) -> None:
    """Also when started with SIGINT ignored, as a non-interactive shell's `cmd &` (and
    some CI runners) start it: Python would keep ignoring it (seen in CI as a hang)."""
    preexec = _ignore_sigint if started == "with-sigint-ignored" else None
    proc = _trace(node, "--vip", WEB_VIP, preexec=preexec)
    _wait_ready(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "bpfgen trace: 0 events in" in err, (proc.returncode, err)
    assert "Traceback" not in err and out == "", (out, err)


def test_bad_input_exits_2_with_the_reason(node: Node) -> None:
    cases = {
        ("--vip", "198.18.128"): "is not an IPv4 address",
        ("--vip", UNKNOWN_VIP): f"is not a frontend of the build up in {node.topo.node}",
        ("--vip", WEB_VIP, "--port", "81"): "is not a frontend",
        ("--vip", WEB_VIP, "--count", "0"): "--count 0",
    }
    for args, message in cases.items():
        proc = _trace(node, *args)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and message in err, (args, proc.returncode, err)
    proc = subprocess.run(
        [str(BPFGEN), "trace", "--netns", "bpfgen-no-such-ns", "--vip", WEB_VIP],
        capture_output=True, text=True, env=node.env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "no network namespace" in proc.stderr, proc.stderr
