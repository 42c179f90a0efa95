"""The runtime on this host's kernel, in namespaces the tests create: up, status, sync, down.

This kernel has no IPVS, so `up` runs with the test-only `ipvs=False` (programs,
pins, map_init, sysctls, nftables; no IPVS services, no dummy device); the IPVS
half runs in the 6.1 VM (tests/vm/guest_ipvs.py). Every test has its own
namespace (random suffix) with its own veths inside it, a private bpffs mount
and state directory, and removes them by name at the end, also on failure.
Nothing touches the root namespace's devices.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bpfgen.compiler import compile_build
from bpfgen_runtime import InputRefused, Options, RuntimeOpError, down, status, sync, up
from bpfgen_runtime import ipvs as ipvs_mod
from bpfgen_runtime import nft as nft_mod
from bpfgen_runtime.cli import NO_IPVS_ENV
from e2e.runtime_env import NODE_YAML, SERVICES, Env, ip_run, ns_run, snapshot

pytestmark = pytest.mark.root


def test_up_status_idempotent_down(env: Env) -> None:
    build = env.build()
    before = snapshot(env)
    report = up(build, env.opts)
    assert f"mount bpffs at {env.opts.bpffs}" in report.changes
    for dev in ("up0", "pv1"):
        assert "handle 0xb9f bpfgen_ingress" in env.filters(dev, "ingress")
        assert "handle 0xb9f bpfgen_egress" in env.filters(dev, "egress")
    assert "bpfgen" not in env.filters("ext0", "ingress")  # not a pods glob match
    info = status(env.opts)
    assert info["in_sync"], info["differences"]
    assert {(a["device"], a["hook"]) for a in info["attached"]} == {
        ("up0", "tc_ingress"), ("up0", "tc_egress"), ("pv1", "tc_ingress"), ("pv1", "tc_egress"),
    }  # fmt: skip
    for a in info["attached"]:
        shown = subprocess.run(
            ["bpftool", "prog", "show", "id", str(a["prog_id"]), "--json"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        assert json.loads(shown)["tag"] == a["tag"]
    assert {m["name"] for m in info["maps"]} == {
        "bpfgen_snat_v4",
        "bpfgen_rsnat_v4",
        "bpfgen_counters",
        "bpfgen_drops",
    }
    assert set(info["counters"]) >= {"pass", "snat_new", "drop_exhausted"}
    assert env.sysctl("net.ipv4.ip_forward") == "1"
    assert env.sysctl("net.ipv4.ip_local_reserved_ports") == "20000-29999"
    assert "notrack" in ns_run(env.ns, "nft", "list", "table", "ip", "bpfgen")

    assert up(build, env.opts).changes == []  # idempotent

    down_report = down(env.opts)
    assert down_report.changes
    assert snapshot(env) == before
    assert not os.listdir(env.opts.bpffs)
    assert down(env.opts).changes == []  # nothing left to remove


def test_status_sees_drift_and_up_repairs_it(env: Env) -> None:
    build = env.build()
    up(build, env.opts)
    ns_run(
        env.ns, "tc", "filter", "del", "dev", "pv1", "egress", "pref", "1", "handle", "0xb9f", "bpf"
    )
    ns_run(env.ns, "nft", "delete", "table", "ip", "bpfgen")
    info = status(env.opts)
    assert not info["in_sync"]
    assert any("egress on tc_egress of pv1" in d for d in info["differences"]), info["differences"]
    assert any("nftables" in d for d in info["differences"])
    repaired = up(build, env.opts)
    assert repaired.changes and status(env.opts)["in_sync"]


def test_sync_attaches_new_pod_device_and_keeps_sessions(env: Env) -> None:
    build = env.build()
    up(build, env.opts)
    snat = Path(env.opts.pin_dir()) / "bpfgen_snat_v4"
    inode = snat.stat().st_ino
    ip_run(
        "link",
        "add",
        "pv2",
        "netns",
        env.ns,
        "type",
        "veth",
        "peer",
        "name",
        "pod2",
        "netns",
        env.ns,
    )
    report = sync(build, env.opts)
    assert [c for c in report.changes if "load" in c] == []  # the live programs are reused
    assert "bpfgen_ingress" in env.filters("pv2", "ingress")
    assert snat.stat().st_ino == inode
    assert status(env.opts)["in_sync"]


def test_sync_refuses_incompatible_maps_unless_reset(env: Env) -> None:
    up(env.build(65536), env.opts)
    smaller = env.build(4096)
    before = status(env.opts)
    with pytest.raises(InputRefused, match=r"bpfgen_snat_v4.*max_entries 65536.*--reset-sessions"):
        sync(smaller, env.opts)
    assert status(env.opts)["attached"] == before["attached"]  # nothing changed
    reset = Options(**{**env.opts.__dict__, "reset_sessions": True})
    report = sync(smaller, reset)
    assert any("sessions reset" in c for c in report.changes), report.changes
    info = status(env.opts)
    assert info["in_sync"] and {
        m["max_entries"]
        for m in info["maps"]
        if m["name"] not in ("bpfgen_counters", "bpfgen_drops")
    } == {4096}


def test_bad_build_directory_refused_before_anything_changes(env: Env) -> None:
    build = env.build()
    before = snapshot(env)
    broken = env.workdir / "broken"
    shutil.copytree(build, broken)
    (broken / "egress.bpf.o").unlink()
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["programs"][0]["attach"][0]["interface"] = "nosuchdev0"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputRefused) as refused:
        up(broken, env.opts)
    assert refused.value.exit_code == 2
    assert any("egress.bpf.o does not exist" in p for p in refused.value.problems)
    # The missing object is reported without looking at devices; fix it and see the device.
    shutil.copy(build / "egress.bpf.o", broken / "egress.bpf.o")
    with pytest.raises(InputRefused, match="no device nosuchdev0 in namespace"):
        up(broken, env.opts)
    with pytest.raises(InputRefused, match="cannot read"):
        up(env.workdir / "nothing-here", env.opts)
    assert snapshot(env) == before


def test_failure_half_way_rolls_back(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    build = env.build()
    before = snapshot(env)

    def broken_replace(definition: str) -> None:
        raise RuntimeOpError("install nftables table ip bpfgen", 5, "injected by the test")

    monkeypatch.setattr(nft_mod, "replace", broken_replace)
    with pytest.raises(RuntimeOpError, match="injected by the test.*rolled back"):
        up(build, env.opts)
    assert snapshot(env) == before
    assert not os.listdir(env.opts.bpffs)


def test_ipvs_build_needs_ipvs_or_says_why(env: Env) -> None:
    build = env.build()
    with_ipvs = Options(**{**env.opts.__dict__, "ipvs": True})
    reason = ipvs_mod.unavailable_reason()
    if reason is None:
        pytest.fail("this host has IPVS: the host suite expects a kernel without it")
    before = snapshot(env)
    with pytest.raises(InputRefused, match="datapath mode ipvs and the kernel has no IPVS"):
        up(build, with_ipvs)
    assert snapshot(env) == before


def test_cli_exit_codes(env: Env) -> None:
    cli = [sys.executable, "-m", "bpfgen_runtime.cli"]
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir,
               NO_IPVS_ENV: "1"}  # fmt: skip
    bad = subprocess.run(
        [*cli, "up", str(env.workdir / "missing"), "--netns", env.ns],
        capture_output=True, text=True, env=environ,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: "), bad.stderr
    build = env.build()
    ok = subprocess.run(
        [*cli, "up", str(build), "--netns", env.ns, "--json"],
        capture_output=True, text=True, env=environ,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["changes"]
    st = subprocess.run(
        [*cli, "status", "--netns", env.ns], capture_output=True, text=True, env=environ
    )
    assert st.returncode == 0 and "live state matches the build" in st.stdout, st.stdout
    gone = subprocess.run(
        [*cli, "down", "--netns", env.ns], capture_output=True, text=True, env=environ
    )
    assert gone.returncode == 0 and "unpin" in gone.stdout
    st = subprocess.run(
        [*cli, "status", "--netns", env.ns], capture_output=True, text=True, env=environ
    )
    assert st.returncode == 3 and "bpfgen is not up" in st.stdout, st.stdout  # is-active's 3


UNSERVED = """\
apiVersion: v1
kind: Service
metadata: {name: v6only, namespace: default}
spec: {clusterIP: '2001:db8::10', clusterIPs: ['2001:db8::10'], ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: thief, namespace: default, creationTimestamp: '2019-01-01T00:00:00Z'}
spec:
  clusterIP: 198.18.128.99
  externalIPs: [198.18.140.23]
  ports: [{name: http, port: 80}]
"""


def test_unserved_objects_are_skipped_and_shown_by_status(env: Env) -> None:
    """issue 16: an IPv6-only Service and an externalIP at another Service's ClusterIP
    (CVE-2020-8554) do not stop the node: compile serves the rest and says what it
    skipped, `status` lists it; --strict refuses and writes nothing."""
    node = env.workdir / "node.yaml"
    node.write_text(NODE_YAML.format(sessions=65536))
    extra = env.workdir / "unserved.yaml"
    extra.write_text(UNSERVED)
    out = env.workdir / "b-skip"
    compile_cmd = [sys.executable, "-m", "bpfgen", "compile", "--no-verify", "--node", str(node),
                   "--services", str(SERVICES), str(extra), "--out", str(out)]  # fmt: skip
    refused = subprocess.run([*compile_cmd, "--strict"], capture_output=True, text=True)
    assert refused.returncode == 2, refused.stderr
    assert f"error: {extra}:4: Service default/v6only: spec.clusterIPs: IPv6-only" in refused.stderr
    assert "198.18.140.23:80/TCP is already taken by Service default/web" in refused.stderr
    assert not out.exists()
    done = subprocess.run(compile_cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ", 4 skipped, 4 notices" in done.stderr, done.stderr
    assert f"notice: {extra}:4: Service default/v6only: spec.clusterIPs: IPv6 only" in done.stderr

    up(out, env.opts)
    info = status(env.opts)
    assert info["in_sync"], info["differences"]
    assert [(k["object"], k["part"], k["unsupported"]) for k in info["skipped"]] == [
        ("Service default/db", "", False),
        ("EndpointSlice default/db-h6j9k", "", False),
        ("Service default/v6only", "spec.clusterIPs", True),
        ("Service default/thief", "spec.ports[0]", True),
    ]
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir,
               NO_IPVS_ENV: "1"}  # fmt: skip
    text = subprocess.run(
        [sys.executable, "-m", "bpfgen_runtime.cli", "status", "--netns", env.ns],
        capture_output=True, text=True, env=environ,
    ).stdout  # fmt: skip
    assert "not served: 4 objects or parts skipped by the compile (2 unsupported" in text, text
    thief = f"  {extra}:12: Service default/thief: spec.ports[0]: 198.18.140.23:80/TCP is "
    assert thief in text, text
    down(env.opts)


def test_xdp_uplink_attach_and_down(env: Env) -> None:
    node = env.workdir / "node-xdp.yaml"
    node.write_text(NODE_YAML.format(sessions=65536).replace("hook: tc}", "hook: xdp}"))
    out = env.workdir / "b-xdp"
    compile_build(node, [SERVICES], out, generic=False, verify=False)
    report = up(out, env.opts)
    assert any("on xdp of up0" in c for c in report.changes), report.changes
    link = ns_run(env.ns, "ip", "link", "show", "dev", "up0")
    assert "xdp" in link, link
    info = status(env.opts)
    assert info["in_sync"], info["differences"]
    assert ("up0", "xdp") in {(a["device"], a["hook"]) for a in info["attached"]}
    assert up(out, env.opts).changes == []
    down(env.opts)
    assert "xdp" not in ns_run(env.ns, "ip", "link", "show", "dev", "up0")
