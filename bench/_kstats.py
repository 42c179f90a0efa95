"""Kernel statistics the connections benchmark reads per block.

- BPF run-time statistics (`run_time_ns`, `run_cnt` of struct bpf_prog_info): the
  kernel counts them only while statistics are enabled. `bpf_run_stats()` enables
  them with `BPF_ENABLE_STATS` (libbpf's `bpf_enable_stats`): the same static key as
  the `kernel.bpf_stats_enabled` sysctl, but held by a file descriptor, so the kernel
  drops it when the fd closes, also when the benchmark is killed, and it never undoes
  another user's setting of the sysctl (two runs that both set and restore the sysctl
  would switch each other's statistics off). Programs are global objects: only the ids
  a lab's runtime attached are read (`prog_stats(ids)`).
- TCP counters of a namespace (`nstat -azsj`: absolute values, history neither read
  nor written): SYN retransmissions, retransmitted segments, retransmission timeouts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bench._netns import BenchError

BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# nstat names: SYNs sent again, segments sent again (SYNs included), RTO expirations.
TCP_COUNTERS = ("TcpExtTCPSynRetrans", "TcpRetransSegs", "TcpExtTCPTimeouts")


def _sysctl_value() -> int | None:
    try:
        with open(STATS_SYSCTL) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


@contextmanager
def bpf_run_stats() -> Iterator[dict[str, Any]]:
    """BPF run-time statistics on for the block of the with-statement; yields what was
    done (recorded in the result), and closes the fd (statistics back as they were)."""
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    lib.bpf_enable_stats.argtypes = [ctypes.c_int]
    lib.bpf_enable_stats.restype = ctypes.c_int
    fd = lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        err = ctypes.get_errno() or -fd
        raise BenchError(f"enable BPF run-time statistics (BPF_ENABLE_STATS): {os.strerror(err)}")
    info = {
        "method": "BPF_ENABLE_STATS(BPF_STATS_RUN_TIME) fd held for the run",
        "sysctl_before": _sysctl_value(),
    }
    try:
        yield info
    finally:
        os.close(fd)
        info["sysctl_after"] = _sysctl_value()


def prog_stats(ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """{id: {name, run_time_ns, run_cnt}} of the loaded programs `ids` (a gone one is left
    out)."""
    from bpfgen_runtime import libbpf

    out: dict[int, dict[str, Any]] = {}
    for prog_id in sorted(set(ids)):
        try:
            fd = libbpf.bpf_prog_get_fd_by_id(prog_id)
        except OSError:
            continue
        try:
            info = libbpf.BpfProgInfo()
            libbpf.bpf_obj_get_info_by_fd(fd, info)
            out[prog_id] = {
                "name": info.name.decode(errors="replace"),
                "run_time_ns": int(info.run_time_ns),
                "run_cnt": int(info.run_cnt),
            }
        finally:
            os.close(fd)
    return out


def prog_breakdown(
    before: Mapping[int, Mapping[str, Any]],
    after: Mapping[int, Mapping[str, Any]],
    connections: int,
    where: Mapping[int, list[str]],
) -> list[dict[str, Any]]:
    """Per program over a block: runs, ns, runs per connection, ns per run and per
    connection (`where`: the program's hooks, e.g. ["c0 xdp"])."""
    rows = []
    for prog_id, a in sorted(after.items()):
        b = before.get(prog_id, {"run_cnt": 0, "run_time_ns": 0})
        runs = a["run_cnt"] - b["run_cnt"]
        ns = a["run_time_ns"] - b["run_time_ns"]
        rows.append({
            "prog_id": prog_id, "name": a["name"], "hooks": where.get(prog_id, []),
            "runs": runs, "ns": ns,
            "runs_per_conn": runs / connections if connections else None,
            "ns_per_run": ns / runs if runs else None,
            "ns_per_conn": ns / connections if connections else None,
        })  # fmt: skip
    return rows


def nstat(exec_in: Callable[..., str], ns: str) -> dict[str, int]:
    """TCP_COUNTERS of namespace `ns` now (`exec_in`: Lab.exec)."""
    out = exec_in(ns, "nstat", "-azsj", *TCP_COUNTERS)
    values = json.loads(out).get("kernel", {})
    return {c: int(values.get(c, 0)) for c in TCP_COUNTERS}


def delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}
