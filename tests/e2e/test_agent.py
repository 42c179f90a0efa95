"""`bpfgen agent` against an API server that lists, watches, compacts and fails (issue 16).

The agent runs as the CLI runs it (a process, --json records on stdout) on this
host's kernel, in a namespace of the test's own (e2e/conftest.py `env`), against
tests/e2e/fake_apiserver.py on 127.0.0.1. Each step changes the cluster and waits
(bounded) for the agent's record of the convergence, then checks the node: the
build directory, the runtime's `status`, the Services the build serves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from bpfgen.compiler import compile_build
from bpfgen_runtime import Options, status
from bpfgen_runtime.cli import NO_IPVS_ENV
from e2e.fake_apiserver import FakeApiServer
from e2e.runtime_env import NODE_YAML, SERVICES, Env
from e2e.test_no_compiler import node_yaml, without_compiler_command
from tests.one_more_service import late_objects

pytestmark = pytest.mark.root

STEP_SECONDS = 60  # one convergence, compile included, on a loaded 2-vCPU machine


class Agent:
    """The agent process and its records."""

    def __init__(
        self,
        env: Env,
        api: FakeApiServer,
        *extra: str,
        no_compiler: bool = False,
        mode: str = "ipvs",
    ) -> None:
        node = env.workdir / "node.yaml"
        node.write_text(node_yaml(mode))
        self.dir = env.workdir / "build"
        self.state = env.workdir / "build.agent"
        command = [sys.executable, "-m", "bpfgen", "agent", str(self.dir), "--node", str(node),
                   "--kubeconfig", str(api.kubeconfig(env.workdir / "kubeconfig")), "--json",
                   "--netns", env.ns, "--debounce", "0.3", "--max-delay", "3", *extra]  # fmt: skip
        environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs,
                   "BPFGEN_RUN_DIR": env.opts.run_dir}  # fmt: skip
        if not IN_VM:  # this host has no IPVS; the 6.1 guest has, and uses it
            environ[NO_IPVS_ENV] = "1"
        if no_compiler:
            command, environ = without_compiler_command(env, command, environ)
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=environ)  # fmt: skip
        self.records: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.records.put(json.loads(line))

    def next(self, match: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The next record that matches, within STEP_SECONDS."""
        deadline = time.monotonic() + STEP_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self.records.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(record)
            if match(record):
                return record
        self.stop()
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        raise AssertionError(f"no {what} in {STEP_SECONDS} s; records: {self.seen}\n{stderr}")

    def converged(self) -> dict[str, Any]:
        record = self.next(lambda r: r["event"] == "converge", "convergence")
        assert record["ok"], record
        return record

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def served(self) -> set[str]:
        """The Services of the manifest the agent compiled last."""
        items = json.loads((self.state / "services.json").read_text())["items"]
        return {f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in items
                if o["kind"] == "Service"}  # fmt: skip


def dual_stack() -> list[dict[str, Any]]:
    """A dual-stack Service as a 1.30 API server returns it, its endpoints in two IPv4
    slices and one IPv6 slice (the endpoint controller's shape)."""
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "dual", "namespace": "default", "uid": "5e1f",
                            "creationTimestamp": "2025-01-02T03:04:05Z",
                            "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
               "spec": {"clusterIP": "198.18.128.80",
                        "clusterIPs": ["198.18.128.80", "2001:db8::80"],
                        "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                   "targetPort": 8080}], "type": "ClusterIP"}}  # fmt: skip

    def slice_(name: str, family: str, address: str) -> dict[str, Any]:
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "dual"}},
                "addressType": family,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}]}  # fmt: skip

    return [
        service,
        slice_("dual-a", "IPv4", "198.19.1.80"),
        slice_("dual-b", "IPv4", "198.19.2.80"),
        slice_("dual-c", "IPv6", "2001:db8:1::80"),
    ]


#: In the 6.1 guest (tests/vm/second_kernel.py) the ipvs mode runs with real IPVS.
IN_VM = bool(os.environ.get("BPFGEN_IN_VM"))


def waiting(env: Env) -> Options:
    """The test's options, waiting for the agent's lock: it may be converging."""
    return dataclasses.replace(env.opts, lock_wait=60.0, ipvs=IN_VM)


@pytest.fixture
def cluster() -> Iterator[FakeApiServer]:
    """The stand-in, with the example's objects (read back from a cluster: managedFields,
    a headless Service) and a dual-stack Service in three slices."""
    with FakeApiServer() as api:
        for obj in [*yaml.safe_load(SERVICES.read_text())["items"], *dual_stack()]:
            api.put(obj)
        yield api


@pytest.mark.parametrize("mode", ["bpf", "ipvs"])
def test_agent_follows_the_cluster(env: Env, cluster: FakeApiServer, mode: str) -> None:
    agent = Agent(env, cluster, "--metrics", "127.0.0.1:0", mode=mode)
    try:
        url = agent.next(lambda r: r["event"] == "metrics", "metrics address")["url"]
        # Start: one full list of each kind, one convergence, `up`.
        first = agent.converged()
        assert first["why"] == "start"
        assert first["changes"], first  # up made the node live
        info = status(waiting(env))
        assert info["in_sync"] and info["config_sha256"] == first["config_sha256"], info
        assert {"default/web", "default/dual"} <= agent.served()
        # Skipped: the headless Service, dual's IPv6 address and its IPv6 slice.
        assert first["skipped"] == 3, first
        # kube-proxy's selector: the headless Service's slice is never listed.
        assert first["objects"] == sum(
            1 for kind in cluster.objects.values() for o in kind.values()
            if "service.kubernetes.io/headless" not in o["metadata"].get("labels", {})
        )  # fmt: skip

        # A new Service: watched, converged, in the build and live.
        for obj in late_objects():
            cluster.put(obj)
        record = agent.converged()
        assert record["why"] == "change" and record["config_sha256"] != first["config_sha256"]
        assert "default/late" in agent.served()
        c = "".join(p.read_text() for p in agent.dir.glob("*.[ch]"))
        assert "ClusterIP 198.18.128.77:8080/TCP" in c  # the frontend, as code
        assert status(waiting(env))["config_sha256"] == record["config_sha256"]

        # A burst of 20 changes within a second: a few convergences, the last state.
        for port in range(9000, 9020):
            cluster.put(late_objects(port)[0])
            time.sleep(0.05)
        record = agent.converged()
        while '"port": 9019' not in (agent.state / "services.json").read_text():
            record = agent.converged()
        assert len([r for r in agent.seen if r["event"] == "converge"]) <= 2 + 3

        # A malformed object beside a good change: the object is rejected (named, with
        # its problem), the change converges all the same.
        bad = late_objects(name="broken")[0]
        bad["spec"]["ports"][0]["port"] = 0
        bad["spec"]["clusterIP"] = bad["spec"]["clusterIPs"][0] = "198.18.128.78"
        cluster.put(bad)
        cluster.put(late_objects(9100)[0])
        record = agent.next(lambda r: r["event"] == "converge" and r["rejected"], "rejection")
        assert record["ok"], record
        (rejected,) = record["rejected"]
        assert rejected["object"] == "Service default/broken", rejected
        assert any("Service default/broken: spec.ports[0].port" in p
                   for p in rejected["problems"]), rejected  # fmt: skip
        text = (agent.state / "services.json").read_text()
        assert '"port": 9100' in text and '"broken"' not in text
        info = status(waiting(env))
        assert info["in_sync"] and info["config_sha256"] == record["config_sha256"], info
        good = record["config_sha256"]
        cluster.delete("Service", "default", "broken")
        again = agent.converged()
        assert again["rejected"] == [] and again["config_sha256"] == good  # same objects

        # Events missed while the watch was down, history compacted: 410, list again.
        cluster.freeze()
        cluster.delete("Service", "default", "late")
        cluster.delete("EndpointSlice", "default", "late-1")
        cluster.compact()
        cluster.drop_watches()
        cluster.freeze(False)
        agent.next(lambda r: r["event"] == "relist", "relist after 410")
        agent.converged()
        assert "default/late" not in agent.served()

        # The API server fails for a while: retried with backoff, then followed again.
        cluster.fail(3)
        cluster.drop_watches()
        error = agent.next(lambda r: r["event"] == "api-error", "API error")
        assert "503" in error["error"] and error["retry_in"] > 0
        for obj in late_objects():
            cluster.put(obj)
        # The slice may come first (its watch was back first): converged as it comes.
        agent.converged()
        while "default/late" not in agent.served():
            agent.converged()
        assert status(waiting(env))["in_sync"]

        # The same story in the metrics.
        with urllib.request.urlopen(url, timeout=10) as response:
            metrics = response.read().decode()
        samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                       if not line.startswith("#"))  # fmt: skip
        ok = sum(r["ok"] for r in agent.seen if r["event"] == "converge")
        assert float(samples['bpfgen_agent_converges_total{result="ok"}']) >= ok, metrics
        assert 'bpfgen_agent_converges_total{result="bad-input"}' not in samples
        assert samples["bpfgen_agent_rejected_objects"] == "0"
        assert sum(float(v) for k, v in samples.items() if "relists_total" in k) >= 1
        assert sum(float(v) for k, v in samples.items() if "api_errors_total" in k) >= 1
        assert samples["bpfgen_agent_in_sync"] == "1"
        assert samples["bpfgen_agent_skipped_objects"] == "3"  # as at the start
        assert "# TYPE bpfgen_agent_converges_total counter\n" in metrics
    finally:
        code = agent.stop()
    assert code == 0
    stop = agent.next(lambda r: r["event"] == "stop", "stop record")
    assert stop["failures"] == 0, agent.seen
    assert stop["converges"] <= 12, agent.seen


def test_agent_without_a_compiler_follows_services(env: Env, cluster: FakeApiServer) -> None:
    """The node of an image: a generic build made where clang is, the agent where it
    is not. Service changes converge (the objects serve again); none needs clang."""
    node = env.workdir / "image-node.yaml"
    node.write_text(NODE_YAML.format(sessions=65536))
    compile_build(node, [SERVICES], env.workdir / "build", build="generic")
    agent = Agent(env, cluster, "--build", "generic", no_compiler=True)
    try:
        first = agent.converged()
        for obj in late_objects():
            cluster.put(obj)
        record = agent.converged()
        assert record["config_sha256"] != first["config_sha256"]
        assert "default/late" in agent.served()
        info = status(waiting(env))
        assert info["in_sync"] and info["config_sha256"] == record["config_sha256"], info
        if IN_VM:  # the new Service is an IPVS virtual service there
            assert any("198.18.128.77:8080" in s["service"] and s["present"]
                       for s in info["ipvs_services"]), info["ipvs_services"]  # fmt: skip
    finally:
        assert agent.stop() == 0
    assert agent.next(lambda r: r["event"] == "stop", "stop record")["failures"] == 0


def test_agent_once_and_a_bad_kubeconfig(env: Env, cluster: FakeApiServer) -> None:
    node = env.workdir / "node.yaml"
    node.write_text(NODE_YAML.format(sessions=65536))
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs,
               "BPFGEN_RUN_DIR": env.opts.run_dir, NO_IPVS_ENV: "1"}  # fmt: skip
    command = [sys.executable, "-m", "bpfgen", "agent", str(env.workdir / "b"), "--node",
               str(node), "--netns", env.ns, "--once"]  # fmt: skip
    missing = subprocess.run([*command, "--kubeconfig", str(env.workdir / "nope")],
                             capture_output=True, text=True, env=environ, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.startswith("error: kubeconfig"), missing
    once = subprocess.run(
        [*command, "--kubeconfig", str(cluster.kubeconfig(env.workdir / "kc"))],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip
    assert once.returncode == 0, once.stderr
    assert "agent: converged (start)" in once.stderr, once.stderr
    assert status(waiting(env))["in_sync"]
    # A problem that is no object's (the node file): the convergence fails, the node
    # keeps its state; --once says so with exit 1.
    node.write_text(NODE_YAML.format(sessions=65536).replace("[20000, 29999]", "[20000, 70000]"))
    bad = subprocess.run(
        [*command, "--kubeconfig", str(env.workdir / "kc")],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    assert "converge failed (start): bad input: the node keeps its last good state" in bad.stderr
    assert f"{node}:" in bad.stderr and "70000 is not a port" in bad.stderr, bad.stderr
    assert status(waiting(env))["in_sync"]


def members(env: Env) -> set[str]:
    """addr:port of every (frontend, backend) entry in the live bpfgen_svc_members."""
    from ipaddress import IPv4Address

    from bpfgen_runtime.contract import layouts
    from bpfgen_runtime.pins import PinnedMap

    with PinnedMap(os.path.join(env.opts.pin_dir(), "bpfgen_svc_members")) as live:
        keys = [layouts.BackendMember.from_buffer_copy(k) for k in live.keys()]  # noqa: SIM118
    return {f"{IPv4Address(bytes(k.addr))}:{int.from_bytes(bytes(k.port), 'big')}" for k in keys}


def test_agent_writes_endpoint_changes_in_place(env: Env, cluster: FakeApiServer) -> None:
    """The fast path (bpfgen/delta.py, docs/agent.md "Endpoint changes"): an image build
    serves an endpoint change with map writes, no compile; the build directory catches
    up once the cluster is quiet (--catchup 2: short so that the test sees it; the
    length of the quiet is what is tested, not load), and the sync of the catch-up
    finds every entry already written. A change that needs new code takes the full path."""
    agent = Agent(env, cluster, "--build", "image", "--catchup", "2", mode="bpf")
    try:
        first = agent.converged()
        assert first["fast_path"] == "on", first
        assert "198.19.2.14:8080" not in members(env)

        web = next(o for o in cluster.objects["EndpointSlice"].values()
                   if o["metadata"]["name"] == "web-4fxq9")  # fmt: skip
        grown = json.loads(json.dumps(web))
        grown["endpoints"].append({"addresses": ["198.19.2.14"], "nodeName": "node-b",
                                   "conditions": {"ready": True, "serving": True,
                                                  "terminating": False}})  # fmt: skip
        cluster.put(grown)
        update = agent.next(lambda r: r["event"] in ("update", "converge"), "update")
        assert update["event"] == "update" and update["ok"], update
        assert update["services"] == ["default/web"] and update["entries"] > 0, update
        assert update["latency"] < STEP_SECONDS
        assert "198.19.2.14:8080" in members(env)  # live, before any compile

        # Quiet for 2 s: the full path, which finds nothing left to write in the maps.
        catchup = agent.converged()
        assert catchup["why"] == "catch-up", catchup
        assert catchup["drift"] == [], json.dumps(catchup, indent=1)
        assert '"198.19.2.14"' in (agent.state / "services.json").read_text()
        info = status(waiting(env))
        assert info["in_sync"] and info["config_sha256"] == catchup["config_sha256"], info

        # The last not-ready endpoint turns ready: no new code (the draining path is
        # compiled in whatever the endpoints), written in place.
        ready = json.loads(json.dumps(grown))
        for e in ready["endpoints"]:
            e["conditions"] = {"ready": True, "serving": True, "terminating": False}
        cluster.put(ready)
        update = agent.next(lambda r: r["event"] in ("update", "converge"), "update")
        assert update["event"] == "update" and update["ok"], update

        # 40 endpoints more: the backend tables outgrow their compiled-in size, new
        # code; the update says so and the full path converges it.
        many = json.loads(json.dumps(ready))
        many["endpoints"] += [{"addresses": [f"198.19.3.{i}"], "nodeName": "node-b",
                               "conditions": {"ready": True}} for i in range(1, 41)]  # fmt: skip
        cluster.put(many)
        fallback = agent.next(lambda r: r["event"] in ("update", "converge"), "update")
        assert fallback["event"] == "update" and not fallback["ok"], fallback
        assert "resize bpfgen_svc_backends" in fallback["fallback"], fallback
        full = agent.converged()
        assert full["why"] == "fallback" and full["fast_path"] == "on", full
        assert "198.19.3.40:8080" in members(env)
    finally:
        code = agent.stop()
    assert code == 0
    stop = agent.next(lambda r: r["event"] == "stop", "stop record")
    assert stop["failures"] == 0 and stop["updates"] == 2, agent.seen
