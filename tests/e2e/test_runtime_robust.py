"""The runtime against damaged or lost state, two operators at once, and closed pipes.

Each test has its own namespace (random suffix) with its own veths, a private bpffs
and state directory (tests/e2e/conftest.py), removed by name at the end, also on
failure. The builds are bpf-mode manifests (runtime_env.as_bpf_mode): this host's
kernel has no IPVS.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bpfgen.build import toolchain
from bpfgen_runtime import Options, down, status, up
from bpfgen_runtime import journal as journal_mod
from bpfgen_runtime.lock import EXIT_LOCKED, lock_path
from bpfgen_runtime.state import state_path
from e2e.runtime_env import Env, as_bpf_mode, ns_run, snapshot

pytestmark = pytest.mark.root

CLI = [sys.executable, "-m", "bpfgen_runtime.cli"]


def _production(env: Env) -> Options:
    return Options(**{**env.opts.__dict__, "ipvs": True})


def _cli(
    env: Env, *argv: str, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir}
    return subprocess.run([*CLI, *argv, "--netns", env.ns], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=environ)  # fmt: skip


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr


def bpfgen_left(env: Env) -> list[str]:
    """Everything of bpfgen's in the test's namespace, bpffs and run dir."""
    left = []
    for dev in ("up0", "pv1", "ext0", "pod1"):
        for hook in ("ingress", "egress"):
            if "0xb9f" in env.filters(dev, hook):
                left.append(f"filter {dev} {hook}")
    if "clsact" in env.qdiscs():
        left.append("clsact qdisc")
    if "xdp" in ns_run(env.ns, "ip", "link"):
        left.append("xdp")
    if os.path.isdir(os.path.join(env.opts.bpffs, "bpfgen")):
        left.append(f"pins {sorted(os.listdir(os.path.join(env.opts.bpffs, 'bpfgen')))}")
    if os.path.exists(env.opts.run_dir) and os.listdir(env.opts.run_dir):
        left.append(f"run dir {os.listdir(env.opts.run_dir)}")
    if env.sysctl("net.ipv4.ip_forward") != "0":
        left.append("ip_forward")
    if env.sysctl("net.ipv4.ip_local_reserved_ports"):
        left.append("ip_local_reserved_ports")
    with open("/proc/self/mounts") as mounts:
        if any(line.split()[1] == env.opts.bpffs for line in mounts):
            left.append("bpffs mount")
    return left


def _up(env: Env) -> tuple[Path, Options]:
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    opts = _production(env)
    assert bpfgen_left(env) == []
    up(build, opts)
    return build, opts


# --- item 10: damaged or lost state ------------------------------------------------------------


DAMAGE = {
    "garbage": lambda p: p.write_bytes(b"\x00\xffnot json at all"),
    "JSON list": lambda p: p.write_text("[1, 2, 3]\n"),
    "truncated": lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),
    "wrong types": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "pins": 5})),
    "directory": lambda p: (p.unlink(), p.mkdir(), (p / "x").write_text("x")),
    "deleted": lambda p: p.unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_state_status_tells_the_truth_and_down_removes_everything(
    env: Env, damage: str
) -> None:
    """The state file's copy on the bpffs (the journal) says what was created, so status
    reports the node as up and down restores even the sysctls."""
    build, opts = _up(env)
    DAMAGE[damage](state_path(opts.run_dir, opts.label))
    st = _cli(env, "status")
    _no_traceback(st)
    assert st.returncode == 0, (st.stdout, st.stderr)
    assert "recovered from its bpffs copy" in st.stdout and "live state matches" in st.stdout
    info = status(opts)
    assert info["up"] and info["record"] == "journal" and info["in_sync"], info
    gone = _cli(env, "down")
    _no_traceback(gone)
    assert gone.returncode == 0, gone.stderr
    assert bpfgen_left(env) == []


@pytest.mark.parametrize("damage", ["truncated", "deleted", "directory"])
def test_damaged_state_up_repairs_and_converges(env: Env, damage: str) -> None:
    build, opts = _up(env)
    DAMAGE[damage](state_path(opts.run_dir, opts.label))
    again = _cli(env, "up", str(build))
    _no_traceback(again)
    assert again.returncode == 0, again.stderr
    assert status(opts)["in_sync"] and status(opts)["record"] == "state file"
    assert down(opts).changes
    assert bpfgen_left(env) == []


def test_state_and_journal_lost_the_kernel_is_the_truth(env: Env) -> None:
    """Without any record, status and down find bpfgen's filters (handle 0xb9f, a
    bpfgen_* program), its clsact qdiscs and its pins in the kernel; only the sysctls'
    previous values are unknown (left, with a note)."""
    build, opts = _up(env)
    state_path(opts.run_dir, opts.label).unlink()
    journal_mod.remove(opts.pin_dir())
    st = _cli(env, "status")
    _no_traceback(st)
    assert st.returncode == 3, st.stdout  # up, but not as any record says
    assert "no state record: found in the kernel" in st.stdout, st.stdout
    assert "tc_ingress" in st.stdout and "bpfgen_ingress" in st.stdout
    gone = _cli(env, "down")
    assert gone.returncode == 0, gone.stderr
    assert "previous values are unknown" in gone.stderr
    # nor is whether bpfgen mounted the bpffs: left mounted
    assert bpfgen_left(env) == ["ip_forward", "ip_local_reserved_ports", "bpffs mount"]


def test_state_and_journal_lost_up_takes_over_and_down_cleans(env: Env) -> None:
    build, opts = _up(env)
    state_path(opts.run_dir, opts.label).unlink()
    journal_mod.remove(opts.pin_dir())
    report = up(build, opts)
    assert any("taken over" in n for n in report.notes), report.notes
    assert status(opts)["in_sync"]
    down(opts)
    assert bpfgen_left(env) == ["ip_forward", "ip_local_reserved_ports", "bpffs mount"]


def test_clsact_deleted_by_hand_is_repaired(env: Env) -> None:
    build, opts = _up(env)
    ns_run(env.ns, "tc", "qdisc", "del", "dev", "pv1", "clsact")
    info = status(opts)
    assert not info["in_sync"] and "add clsact qdisc on pv1" in info["differences"], info
    assert _cli(env, "status").returncode == 3
    report = up(build, opts)
    assert "add clsact qdisc on pv1" in report.changes, report.changes
    assert "0xb9f" in env.filters("pv1", "ingress")
    assert status(opts)["in_sync"]
    down(opts)
    assert bpfgen_left(env) == []


def test_namespace_made_again_under_the_same_name_is_repaired(env: Env) -> None:
    build, opts = _up(env)
    ns_run(env.ns, "ip", "link", "del", "pv1")
    ns_run(env.ns, "ip", "link", "add", "pv1", "type", "veth", "peer", "name", "pod1")
    for dev in ("pv1", "pod1"):
        ns_run(env.ns, "ip", "link", "set", dev, "up")
    up(build, opts)
    assert "0xb9f" in env.filters("pv1", "ingress")
    assert status(opts)["in_sync"]
    down(opts)
    assert bpfgen_left(env) == []


# --- item 9: one verb at a time per namespace --------------------------------------------------


def test_a_held_lock_refuses_with_its_own_exit_code(env: Env) -> None:
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    os.makedirs(env.opts.run_dir, exist_ok=True)
    path = lock_path(env.opts.run_dir, env.opts.label)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()} up\n".encode())
        for argv in (["up", str(build)], ["down"], ["status"]):
            busy = _cli(env, *argv)
            _no_traceback(busy)
            assert busy.returncode == EXIT_LOCKED, (argv, busy.stderr)
            assert "another bpfgen command is running" in busy.stderr, busy.stderr
            assert f"pid {os.getpid()} (up)" in busy.stderr and "--wait" in busy.stderr
        started = time.monotonic()
        waited = _cli(env, "status", "--wait", "0.5")
        assert waited.returncode == EXIT_LOCKED and time.monotonic() - started >= 0.5
    finally:
        os.close(fd)
    assert bpfgen_left(env) == ["run dir " + str([os.path.basename(path)])]
    assert _cli(env, "up", str(build), "--wait", "5").returncode == 0
    assert _cli(env, "down").returncode == 0
    assert bpfgen_left(env) == []


def test_two_ups_at_once_one_runs_the_other_is_refused(env: Env) -> None:
    """Before the lock both exited 0 and the node was out of sync in 3 of 10 tries."""
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir}
    for _ in range(4):
        procs = [subprocess.Popen([*CLI, "up", str(build), "--netns", env.ns], env=environ,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]  # fmt: skip
        codes = sorted(p.wait(timeout=60) for p in procs)
        for p in procs:
            assert p.stderr is not None and "Traceback" not in p.stderr.read()
        assert codes[0] == 0 and set(codes) <= {0, EXIT_LOCKED}, codes
        assert status(_production(env))["in_sync"]
        assert _cli(env, "down").returncode == 0
        assert bpfgen_left(env) == []


def test_up_waits_for_a_running_up_with_wait(env: Env) -> None:
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir}
    procs = [subprocess.Popen([*CLI, "up", str(build), "--netns", env.ns, "--wait", "30"],
                              env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]  # fmt: skip
    assert [p.wait(timeout=90) for p in procs] == [0, 0, 0]
    assert status(_production(env))["in_sync"]
    assert _cli(env, "down").returncode == 0
    assert bpfgen_left(env) == []


# --- item 11: closed pipes, the verifier's log --------------------------------------------------


def test_status_and_up_into_a_closed_pipe(env: Env) -> None:
    """`bpfgen status | head`: 141 (SIGPIPE's), no traceback; up did its work."""
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    for argv in (["up", str(build)], ["status"], ["status", "--json"]):
        r, w = os.pipe()
        os.close(r)
        try:
            done = _cli(env, *argv, stdout=w)
        finally:
            os.close(w)
        assert done.returncode == 141, (argv, done.stderr)
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert status(_production(env))["in_sync"]
    down(_production(env))


REJECTED_C = """\
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
SEC("tc")
int bpfgen_ingress(struct __sk_buff *skb)
{
	unsigned char *p = (void *)(long)skb->data + 14;
	return *p == 0xff ? TC_ACT_SHOT : TC_ACT_OK; /* no data_end check */
}
char LICENSE[] SEC("license") = "Dual BSD/GPL";
"""


def test_verifier_rejection_at_up_keeps_its_log_in_the_run_dir(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a file per failure in /tmp: `<run dir>/logs/<namespace>/<program>.verifier.log`,
    named in the error, replaced by the next failure, removed by `down`."""
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    tc = toolchain()
    (tmp_path / "rejected.c").write_text(REJECTED_C)
    subprocess.run([tc.clang, *tc.flags, "-c", str(tmp_path / "rejected.c"),
                    "-o", str(build / "ingress.bpf.o")], check=True)  # fmt: skip
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with pytest.raises(Exception, match="verifier rejected") as exc:
        up(build, _production(env))
    log = Path(env.opts.run_dir) / "logs" / env.ns / "bpfgen_ingress.verifier.log"
    assert f"full log: {log}" in str(exc.value), str(exc.value)
    assert log.is_file() and list(private_tmp.iterdir()) == []
    assert bpfgen_left(env) == [f"run dir {['logs']}"]
    down(_production(env))
    assert bpfgen_left(env) == []
    assert snapshot(env)["state"] == []
