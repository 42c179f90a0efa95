"""The runtime with `datapath.mode: bpf` manifests, on this host's kernel (no IPVS).

What up/sync/status/down do with a bpf-mode build directory (docs/runtime.md, "bpf
mode"): programs loaded, maps pinned, map_init written, only the manifest's hooks
attached (tc ingress: no egress program), ip_forward and the reserved SNAT ports
set; no IPVS, no dummy device, no nftables, and no refusal because this kernel has
no IPVS (the options here are the production ones, `ipvs=True`). sync rewrites
map_init maps in place when the objects did not change and replaces the programs
keeping the pins when they did.

The build directories are ipvs-mode builds turned into bpf-mode manifests
(runtime_env.as_bpf_mode): this is the runtime's contract, independent of the bpf
mode's C, which test_bpf_mode_host.py runs end to end. Same environment as
test_runtime_host.py: a namespace per test, private bpffs and run dir.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from pathlib import Path

import pytest

from bpfgen.compiler import compile_build
from bpfgen_runtime import InputRefused, Options, RuntimeOpError, down, status, sync, up
from bpfgen_runtime import attach as attach_mod
from bpfgen_runtime.builddir import load_digest
from bpfgen_runtime.contract.layouts import NatEntry, Tuple4
from bpfgen_runtime.pins import PinnedMap, program_map_ids
from e2e.runtime_env import NODE_YAML, SERVICES, Env, as_bpf_mode, ns_run, snapshot

pytestmark = pytest.mark.root

REVERSE_MAP = "bpfgen_rsnat_v4"  # hash, key 16 / value 8: the map_init vehicle here


def _production(env: Env) -> Options:
    """The options a node uses (IPVS not switched off): bpf mode must not need it."""
    return Options(**{**env.opts.__dict__, "ipvs": True})


def _entry(i: int, value: int) -> list[str]:
    key = bytes([198, 19, 1, i]) + bytes(12)
    return [key.hex(), value.to_bytes(8, "little").hex()]


def _map_contents(env: Env, name: str) -> dict[str, str]:
    with PinnedMap(os.path.join(env.opts.pin_dir(), name)) as m:
        return {k.hex(): v.hex() for k, v in m.items()}


def _build_with_range(env: Env, last: int, name: str) -> Path:
    """The example build with another SNAT range: other constants, the same maps."""
    node = env.workdir / f"node-{name}.yaml"
    node.write_text(NODE_YAML.format(sessions=65536).replace("29999]", f"{last}]"))
    out = env.workdir / name
    compile_build(node, [SERVICES], out, generic=False, verify=False)
    return out


def test_bpf_mode_up_status_down(env: Env) -> None:
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    opts = _production(env)
    before = snapshot(env)
    report = up(build, opts)
    assert not [c for c in report.changes if "nftables" in c or "IPVS" in c or "dummy" in c]
    for dev in ("up0", "pv1"):
        assert "handle 0xb9f bpfgen_ingress" in env.filters(dev, "ingress")
        assert "bpf" not in env.filters(dev, "egress"), "bpf mode attaches no egress program"
    assert "bpfgen" not in ns_run(env.ns, "nft", "list", "ruleset")
    assert "bpfgen-ipvs0" not in ns_run(env.ns, "ip", "link")
    assert env.sysctl("net.ipv4.ip_forward") == "1"
    assert env.sysctl("net.ipv4.ip_local_reserved_ports") == "20000-29999"
    info = status(opts)
    assert info["mode"] == "bpf" and info["nft_table"] is None and info["ipvs_services"] == []
    assert info["in_sync"], info["differences"]
    assert {(a["device"], a["hook"]) for a in info["attached"]} == {
        ("up0", "tc_ingress"), ("pv1", "tc_ingress"),
    }  # fmt: skip
    assert "pass" in info["counters"]
    assert up(build, opts).changes == []  # idempotent
    assert down(opts).changes
    assert snapshot(env) == before
    assert not os.listdir(env.opts.bpffs)


def test_bpf_mode_cli_status_shows_mode(env: Env) -> None:
    import sys

    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir}
    cli = [sys.executable, "-m", "bpfgen_runtime.cli"]
    ok = subprocess.run([*cli, "up", str(build), "--netns", env.ns], capture_output=True,
                        text=True, env=environ)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    st = subprocess.run(
        [*cli, "status", "--netns", env.ns], capture_output=True, text=True, env=environ
    )
    assert st.returncode == 0 and "(mode bpf," in st.stdout, st.stdout
    assert "nftables" not in st.stdout and "live state matches the build" in st.stdout


def test_bpf_mode_sync_rewrites_maps_in_place(env: Env) -> None:
    """Only map_init changed: no load, no replace; entries written, then stale ones removed."""
    plain = env.build()
    first = as_bpf_mode(plain, env.workdir / "m1", {REVERSE_MAP: [_entry(1, 1), _entry(2, 2)]})
    second = as_bpf_mode(plain, env.workdir / "m2", {REVERSE_MAP: [_entry(2, 7), _entry(3, 3)]})
    opts = _production(env)
    up(first, opts)
    assert _map_contents(env, REVERSE_MAP) == dict(map(tuple, [_entry(1, 1), _entry(2, 2)]))
    ids = {(a["device"], a["hook"], a["prog_id"]) for a in status(opts)["attached"]}
    inode = (Path(opts.pin_dir()) / REVERSE_MAP).stat().st_ino
    report = sync(second, opts)
    assert report.changes == [
        f"map {REVERSE_MAP}: 2 entries written",
        f"map {REVERSE_MAP}: 1 stale entries removed",
    ], report.changes
    assert _map_contents(env, REVERSE_MAP) == dict(map(tuple, [_entry(2, 7), _entry(3, 3)]))
    assert {(a["device"], a["hook"], a["prog_id"]) for a in status(opts)["attached"]} == ids
    assert (Path(opts.pin_dir()) / REVERSE_MAP).stat().st_ino == inode
    assert status(opts)["in_sync"]
    assert sync(second, opts).changes == []


def test_bpf_mode_sync_new_code_replaces_programs_keeping_sessions(env: Env) -> None:
    opts = _production(env)
    up(as_bpf_mode(env.build(), env.workdir / "a"), opts)
    session = _entry(9, 42)
    with PinnedMap(os.path.join(opts.pin_dir(), REVERSE_MAP)) as m:
        m.update(bytes.fromhex(session[0]), bytes.fromhex(session[1]))
    ids = {a["device"]: a["prog_id"] for a in status(opts)["attached"]}
    inodes = {p.name: p.stat().st_ino for p in Path(opts.pin_dir()).iterdir()}
    other = as_bpf_mode(_build_with_range(env, 29000, "narrow"), env.workdir / "b")
    report = sync(other, opts)
    assert any(c.startswith("load ") for c in report.changes), report.changes
    assert {c for c in report.changes if c.startswith("replace ")} == {
        "replace ingress on tc_ingress of pv1", "replace ingress on tc_ingress of up0",
    }, report.changes  # fmt: skip
    after = {a["device"]: a["prog_id"] for a in status(opts)["attached"]}
    assert all(after[d] != ids[d] for d in ids), (ids, after)
    assert {p.name: p.stat().st_ino for p in Path(opts.pin_dir()).iterdir()} == inodes
    assert _map_contents(env, REVERSE_MAP)[session[0]] == session[1]
    assert status(opts)["in_sync"]


def test_sync_does_not_switch_modes(env: Env) -> None:
    ipvs_build = env.build()
    up(ipvs_build, env.opts)  # ipvs mode, IPVS off (this kernel): programs and nft table
    before = snapshot(env)
    with pytest.raises(InputRefused, match="up in datapath mode ipvs.*mode bpf.*down"):
        sync(as_bpf_mode(ipvs_build, env.workdir / "bpf"), env.opts)
    assert snapshot(env) == before


def test_bpf_mode_manifest_with_egress_program_refused(env: Env) -> None:
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["programs"][1]["attach"] = [
        {"role": "uplink", "interface": "up0", "hook": "tc_egress"}
    ]
    (build / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(env)
    with pytest.raises(InputRefused, match="tc_egress on up0: a bpf-mode build has no egress"):
        up(build, _production(env))
    assert snapshot(env) == before


def test_bpf_mode_failure_half_way_rolls_back(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    build = as_bpf_mode(env.build(), env.workdir / "bpf", {REVERSE_MAP: [_entry(1, 1)]})
    before = snapshot(env)
    real = attach_mod.attach
    calls = []

    def second_attach_fails(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeOpError("attach ingress to tc ingress of up0", 5, "injected by the test")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(attach_mod, "attach", second_attach_fails)
    with pytest.raises(RuntimeOpError, match="injected by the test.*rolled back"):
        up(build, _production(env))
    assert len(calls) == 2
    assert snapshot(env) == before
    assert not os.listdir(env.opts.bpffs)
    assert "bpf" not in env.filters("pv1", "ingress") + env.filters("up0", "ingress")


def _live_bss(opts: Options) -> set[bytes]:
    values = set()
    for prog_id in {int(a["prog_id"]) for a in status(opts)["attached"]}:
        for map_id in program_map_ids(prog_id):
            with PinnedMap.by_id(map_id) as m:
                if m.name.endswith(".bss"):
                    values.add(m.lookup(bytes(4)) or b"")
    return values


def test_generic_build_config_change_rewrites_bss_in_place(env: Env) -> None:
    """Same code, another .bss image (a generic build's hash seed changes with every
    input change): written into the live programs, nothing loaded or replaced."""
    node = env.workdir / "node-generic.yaml"
    node.write_text(NODE_YAML.format(sessions=65536))
    compile_build(node, [SERVICES], env.workdir / "g", generic=True, verify=False)
    first = as_bpf_mode(env.workdir / "g", env.workdir / "g1")
    second = as_bpf_mode(env.workdir / "g", env.workdir / "g2")
    manifest = json.loads((second / "manifest.json").read_text())
    image = bytearray.fromhex(manifest["runtime_config"]["hex"])
    image[-8] ^= 0xFF  # some byte of the config
    manifest["runtime_config"]["hex"] = image.hex()
    (second / "manifest.json").write_text(json.dumps(manifest))
    opts = _production(env)
    up(first, opts)
    ids = {a["prog_id"] for a in status(opts)["attached"]}
    assert len(_live_bss(opts)) == 1 and bytes(image) not in _live_bss(opts)
    report = sync(second, opts)
    assert report.changes == ["runtime config: .bss of 1 live programs rewritten"], report.changes
    assert {a["prog_id"] for a in status(opts)["attached"]} == ids
    assert _live_bss(opts) == {bytes(image)}
    assert status(opts)["in_sync"] and sync(second, opts).changes == []


def _section_offset(obj: Path, name: str) -> int:
    out = subprocess.run(["readelf", "-S", "-W", str(obj)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for line in out.splitlines():
        fields = line.replace("[ ", "[").split()
        if len(fields) > 5 and fields[1] == name:
            return int(fields[4], 16)
    raise AssertionError(f"no section {name} in {obj}:\n{out}")


def test_load_digest_ignores_debug_info_only(env: Env) -> None:
    """What decides between replacing the programs and rewriting maps in place: a change
    in DWARF (e.g. a source comment's MD5 in .debug_line) is not a new program."""
    obj = env.build() / "ingress.bpf.o"
    elf = obj.read_bytes()
    digest = load_digest(elf)
    assert digest is not None and load_digest(b"not an ELF object") is None

    def flipped(section: str) -> bytes:
        at = _section_offset(obj, section) + 4
        return elf[:at] + bytes([elf[at] ^ 0xFF]) + elf[at + 1 :]

    assert load_digest(flipped(".debug_line")) == digest
    assert load_digest(flipped("tc")) != digest


# --- service tables: rewritten in place, or replaced with the programs -------------------------

SERVICE_TABLES = ("bpfgen_svc_frontends", "bpfgen_svc_backends", "bpfgen_svc_members")
SESSION_MAPS = ("bpfgen_nat_v4", "bpfgen_rnat_v4", "bpfgen_counters")
SERVICE_VIPS = {"a": "198.18.128.21", "b": "198.18.128.22", "c": "198.18.128.23",
                "d": "198.18.128.24",
                "z": "198.18.128.26",
                **{f"z{i:02d}": f"198.18.129.{i + 1}" for i in range(40)}}  # fmt: skip


def _bpf_services(names: list[str]) -> str:
    """One ClusterIP Service per name (80/TCP, one endpoint); frontend ids follow the names'
    order, so a Service sorted first moves the others' ids, one sorted last does not."""
    items = ""
    for i, name in enumerate(names):
        vip = SERVICE_VIPS[name]
        items += (
            f"- apiVersion: v1\n  kind: Service\n  metadata: {{name: {name}, namespace: t}}\n"
            f"  spec:\n    clusterIP: {vip}\n    clusterIPs: [{vip}]\n"
            "    ports:\n    - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n"
            "- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  addressType: IPv4\n"
            f"  metadata:\n    name: {name}-1\n    namespace: t\n"
            f"    labels: {{kubernetes.io/service-name: {name}}}\n"
            f"  endpoints:\n  - addresses: [198.19.1.{30 + i}]\n    conditions: {{ready: true}}\n"
            "  ports:\n  - {name: http, port: 8080, protocol: TCP}\n"
        )
    return "apiVersion: v1\nkind: List\nitems:\n" + items


def _generic_bpf_build(env: Env, names: list[str], scheduler: str = "random") -> Path:
    node = env.workdir / f"node-bpf-{scheduler}.yaml"
    node.write_text(
        NODE_YAML.format(sessions=65536).replace(
            "mode: ipvs, scheduler: rr", f"mode: bpf, scheduler: {scheduler}"
        )
    )
    services = env.workdir / f"svc-{''.join(names)}.yaml"
    services.write_text(_bpf_services(names))
    out = env.workdir / f"bpf-{scheduler}-{''.join(names)}"
    compile_build(node, [services], out, generic=True, verify=False)
    return out


def _wanted(build: Path, name: str) -> dict[str, str]:
    manifest = json.loads((build / "manifest.json").read_text())
    entries = json.loads((build / manifest["map_init"]).read_text())[name]
    return {k: v for k, v in entries}


def _inodes(opts: Options) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in Path(opts.pin_dir()).iterdir()}


def _live_programs_use_pins(opts: Options) -> bool:
    """Every attached program uses exactly the maps pinned under the tables' names."""
    pinned = set()
    for name in SERVICE_TABLES + SESSION_MAPS:
        with PinnedMap(os.path.join(opts.pin_dir(), name)) as m:
            pinned.add(m.info.id)
    return all(pinned <= set(program_map_ids(int(a["prog_id"]))) for a in status(opts)["attached"])


def test_bpf_mode_sync_service_tables_in_place_or_replaced(env: Env) -> None:
    """Real bpf-mode generic builds (same code, frontends in maps). A Service sorted
    after the others keeps every frontend id: the pinned tables are rewritten in place
    (same maps, same programs). A Service sorted before them moves ids: the programs
    are loaded again with fresh tables, filled, attached, then pinned in place of the
    old ones; the session maps stay the same maps (a session entry survives)."""
    opts = _production(env)
    base = _generic_bpf_build(env, ["b", "d"])
    later = _generic_bpf_build(env, ["b", "d", "z"])
    earlier = _generic_bpf_build(env, ["a", "b", "d"])
    first = up(base, opts)
    assert not [n for n in first.notes if "service tables" in n], first.notes  # created, filled
    assert _live_programs_use_pins(opts)
    ids = {a["prog_id"] for a in status(opts)["attached"]}
    inodes = _inodes(opts)

    report = sync(later, opts)
    assert not [c for c in report.changes if c.startswith(("load ", "replace ", "service "))]
    assert any(n.startswith("service tables rewritten in place") for n in report.notes), report
    assert {a["prog_id"] for a in status(opts)["attached"]} == ids
    assert _inodes(opts) == inodes
    assert _map_contents(env, SERVICE_TABLES[0]) == _wanted(later, SERVICE_TABLES[0])

    session = (
        bytes([198, 19, 1, 30]) + bytes(ctypes.sizeof(Tuple4) - 4),
        bytes(range(ctypes.sizeof(NatEntry))),
    )
    with PinnedMap(os.path.join(opts.pin_dir(), "bpfgen_nat_v4")) as nat:
        nat.update(*session)
    report = sync(earlier, opts)
    moved = [c for c in report.changes if c.startswith("service tables replaced")]
    assert len(moved) == 1 and "198.18.128.22:80/TCP id 0 -> 1" in moved[0], moved
    assert moved[0].startswith("service tables replaced with the programs: frontend ids moved: ")
    assert any(c.startswith("load ") for c in report.changes), report.changes
    assert [c for c in report.changes if c.startswith("pin the new ")] == [
        f"pin the new {n} at {opts.pin_dir()}/{n} (the old table unpinned)"
        for n in sorted(SERVICE_TABLES)
    ], report.changes
    # order: load, tables filled, every hook replaced, then the pins moved
    steps = ("load ", "map bpfgen_svc_frontends", "replace ", "pin the new ")
    order = [next(i for i, c in enumerate(report.changes) if c.startswith(p)) for p in steps]
    assert order == sorted(order), report.changes
    after = _inodes(opts)
    assert set(after) == set(inodes), "a staged pin was left"
    assert all(after[n] != inodes[n] for n in SERVICE_TABLES)
    assert all(after[n] == inodes[n] for n in SESSION_MAPS)
    assert not {a["prog_id"] for a in status(opts)["attached"]} & ids
    assert _live_programs_use_pins(opts)
    for name in SERVICE_TABLES:
        assert _map_contents(env, name) == _wanted(earlier, name), name
    assert _map_contents(env, "bpfgen_nat_v4")[session[0].hex()] == session[1].hex()
    assert status(opts)["in_sync"]
    assert sync(earlier, opts).changes == []


def test_bpf_mode_sync_reusing_a_removed_frontend_id_replaces_tables(env: Env) -> None:
    """b replaced by c (same position): d keeps its id, but c takes b's id 0; in place,
    b's entry (removed last) would briefly lead b's traffic to c's backends and
    membership: replaced."""
    opts = _production(env)
    up(_generic_bpf_build(env, ["b", "d"]), opts)
    swapped = _generic_bpf_build(env, ["c", "d"])
    report = sync(swapped, opts)
    moved = [c for c in report.changes if c.startswith("service tables replaced")]
    assert len(moved) == 1 and "frontend ids moved: 198.18.128.23:80/TCP id - -> 0 (" in moved[0]
    assert _live_programs_use_pins(opts)
    assert _map_contents(env, SERVICE_TABLES[0]) == _wanted(swapped, SERVICE_TABLES[0])
    assert status(opts)["in_sync"]


def test_bpf_mode_sync_resized_service_table_replaces_it(env: Env) -> None:
    """Maglev in a map has one row per possible frontend id (64, or twice the frontends,
    a power of two): Services added past that (even after the others, ids stable)
    resize bpfgen_svc_maglev. Service tables hold no sessions: the sync is not refused
    (no --reset-sessions), the table is replaced with the programs."""
    opts = _production(env)
    up(_generic_bpf_build(env, ["b", "d"], "maglev"), opts)
    inodes = _inodes(opts)
    more = [f"z{i:02d}" for i in range(40)]  # 43 frontends: 128 rows
    grown = _generic_bpf_build(env, ["b", "d", "z", *more], "maglev")
    report = sync(grown, opts)
    replaced = [c for c in report.changes if c.startswith("service tables replaced")]
    assert len(replaced) == 1, report.changes
    assert replaced[0].startswith(
        "service tables replaced with the programs: definition changed: "
    ), replaced
    assert "bpfgen_svc_maglev (" in replaced[0], replaced  # (the frontend map grew too)
    manifest = json.loads((grown / "manifest.json").read_text())
    want = next(m["max_entries"] for m in manifest["maps"] if m["name"] == "bpfgen_svc_maglev")
    with PinnedMap(os.path.join(opts.pin_dir(), "bpfgen_svc_maglev")) as m:
        assert m.max_entries == want
    after = _inodes(opts)
    assert all(after[n] == inodes[n] for n in SESSION_MAPS)
    assert _live_programs_use_pins(opts)
    assert status(opts)["in_sync"] and sync(grown, opts).changes == []


def test_bpf_mode_interrupted_table_replacement_converges(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that stops after the new programs are attached but before their tables are
    pinned (rename fails) leaves the staged pins listed in the state file; the live
    programs run on their own complete tables. The next sync replaces programs and
    tables again and publishes them; `down` removes everything."""
    import bpfgen_runtime.mode_bpf as mode_bpf

    opts = _production(env)
    up(_generic_bpf_build(env, ["b", "d"]), opts)
    earlier = _generic_bpf_build(env, ["a", "b", "d"])

    def rename_fails(src: str, dst: str) -> None:
        raise OSError(5, "injected by the test", src)

    monkeypatch.setattr(mode_bpf.os, "rename", rename_fails)
    with pytest.raises(RuntimeOpError, match="bpfgen_svc_backends__next as .*Input/output error"):
        sync(earlier, opts)
    monkeypatch.undo()
    staged = sorted(p.name for p in Path(opts.pin_dir()).iterdir() if p.name.endswith("__next"))
    assert staged == sorted(f"{n}__next" for n in SERVICE_TABLES)
    assert not status(opts)["in_sync"]
    report = sync(earlier, opts)
    assert any("interrupted" in n for n in report.notes), report
    assert any(c.startswith("service tables replaced") for c in report.changes), report.changes
    assert not [p for p in Path(opts.pin_dir()).iterdir() if p.name.endswith("__next")]
    assert _live_programs_use_pins(opts)
    for name in SERVICE_TABLES:
        assert _map_contents(env, name) == _wanted(earlier, name), name
    assert status(opts)["in_sync"] and sync(earlier, opts).changes == []
    down(opts)
    assert not os.listdir(env.opts.bpffs)
