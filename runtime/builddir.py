"""A bpfgen build directory as the runtime reads it: manifest.json, objects, map_init.json.

`read_build(path)` checks everything the runtime relies on and returns a frozen
`Build`; every problem found is collected and raised together as `InputRefused`
(exit 2 in the CLI), so a bad build directory is refused before anything on the
node changes. The runtime reads the manifest only through this module.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import CGROUP_HOOKS, CONFIG_SECTION, DEVICE_HOOKS, BuildKind, Hook, Mode
from .errors import RuntimeOpError

SCHEMA = 1
BPFFS_ROOT = "/sys/fs/bpf"  # where the manifest's pin path templates point
PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
FRONTEND_KINDS = ("ClusterIP", "NodePort", "ExternalIP", "LoadBalancer")


class InputRefused(RuntimeOpError):
    """The input (build directory, netns, flags) cannot be used here; nothing was changed.

    `problems` lists every reason, each naming the file or thing and what was expected.
    """

    exit_code = 2

    def __init__(self, op: str, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(op, errno.EINVAL, "; ".join(problems))
        self.args = (f"{op}: " + ("\n  ".join(["refused:", *problems])),)


@dataclass(frozen=True)
class Attach:
    role: str
    interface: str  # a device name or a glob ("veth*"); cgroup hooks: a cgroup v2 directory
    hook: Hook

    @property
    def is_cgroup(self) -> bool:
        return self.hook.is_cgroup

    @property
    def is_glob(self) -> bool:
        return not self.is_cgroup and any(c in self.interface for c in "*?[")


@dataclass(frozen=True)
class Program:
    name: str
    object: str  # file name inside the build directory
    section: str
    function: str
    attach: tuple[Attach, ...]


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: str  # BPF_MAP_TYPE_*
    key_size: int
    value_size: int
    max_entries: int
    pin_template: str  # "/sys/fs/bpf/bpfgen/{netns}/NAME"

    def pin_path(self, bpffs: str, netns: str) -> str:
        """The pin path under `bpffs` (the manifest's templates assume /sys/fs/bpf)."""
        rel = os.path.relpath(self.pin_template.format(netns=netns), BPFFS_ROOT)
        return os.path.join(bpffs, rel)


@dataclass(frozen=True)
class Backend:
    address: str
    port: int
    weight: int


@dataclass(frozen=True)
class Frontend:
    kind: str
    service: str
    address: str | None  # None: a NodePort, on every node address
    port: int
    protocol: str  # TCP | UDP
    scheduler: str
    persistence_timeout: int | None
    backends: tuple[Backend, ...]

    @property
    def proto_number(self) -> int:
        return PROTOCOLS[self.protocol]


@dataclass(frozen=True)
class NodeFacts:
    name: str
    addresses: tuple[str, ...]
    snat_port_range: tuple[int, int]
    node_port_range: tuple[int, int]
    scheduler: str
    timeouts: dict[str, int]
    masquerade_mark: int


@dataclass(frozen=True)
class Build:
    """What the runtime needs of a build directory, checked."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)
    mode: Mode
    config_sha256: str
    programs: tuple[Program, ...]
    maps: tuple[MapSpec, ...]
    node: NodeFacts
    frontends: tuple[Frontend, ...]
    map_init: dict[str, tuple[tuple[bytes, bytes], ...]]
    runtime_config: tuple[str, bytes] | None  # (internal map suffix, initial value)
    object_sha256: dict[str, str]  # object file name -> load_digest of its bytes

    @property
    def needs_ipvs(self) -> bool:
        return self.mode is Mode.IPVS

    @property
    def needs_nft(self) -> bool:
        """The notrack table is the ipvs mode's conntrack bypass; bpf mode has none."""
        return self.mode is Mode.IPVS

    def object_path(self, program: Program) -> Path:
        return self.path / program.object

    def initial_values(self) -> dict[str, bytes]:
        return {} if self.runtime_config is None else dict([self.runtime_config])

    def frontend_addresses(self) -> list[str]:
        """Every VIP (ClusterIP, external and LoadBalancer IPs), sorted, without duplicates."""
        found = {f.address for f in self.frontends if f.address is not None}
        return sorted(found, key=ipaddress.IPv4Address)

    def objects(self) -> list[str]:
        """Object files in manifest order, each once."""
        return list(dict.fromkeys(p.object for p in self.programs))


def read_build(path: str | os.PathLike[str]) -> Build:
    """Read and check `path`/manifest.json and what it names; InputRefused lists every problem."""
    build_dir = Path(path)
    op = f"read build directory {build_dir}"
    manifest_path = build_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except OSError as exc:
        raise InputRefused(
            op, [f"{manifest_path}: cannot read ({exc.strerror}); is it a bpfgen build directory?"]
        ) from exc
    except ValueError as exc:
        raise InputRefused(op, [f"{manifest_path}: not JSON ({exc})"]) from exc
    checker = _Checker(str(manifest_path))
    build = checker.build(build_dir, manifest)
    if checker.problems or build is None:
        raise InputRefused(op, checker.problems)
    return build


class _Checker:
    """Reads the manifest field by field; each problem names its path in the file."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.where}: {path}: {message}")

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], path: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            self.fail(path, "missing")
            return None
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.fail(path, f"{value!r} is not {names}")
            return None
        return value

    def items(self, obj: Any, key: str, path: str) -> Iterator[tuple[str, Any]]:
        seq = self.get(obj, key, list, path)
        for i, item in enumerate(seq or []):
            yield f"{path}[{i}]", item

    def address(self, value: Any, path: str) -> str | None:
        try:
            return str(ipaddress.IPv4Address(value))
        except (ValueError, TypeError):
            self.fail(path, f"{value!r} is not an IPv4 address")
            return None

    def port(self, value: Any, path: str) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            self.fail(path, f"{value!r} is not a port (1-65535)")
            return None
        return value

    def port_range(self, obj: Any, key: str, path: str) -> tuple[int, int]:
        pair = self.get(obj, key, list, path) or []
        if len(pair) != 2:
            self.fail(path, f"{pair!r} is not [first, last]")
            return (0, 0)
        first, last = self.port(pair[0], f"{path}[0]"), self.port(pair[1], f"{path}[1]")
        if first is None or last is None:
            return (0, 0)
        if first > last:
            self.fail(path, f"{first} > {last}")
        return (first, last)

    def build(self, build_dir: Path, m: Any) -> Build | None:
        schema = self.get(m, "schema", int, "schema")
        if schema is not None and schema != SCHEMA:
            self.fail("schema", f"{schema} is not supported (this runtime reads schema {SCHEMA})")
            return None
        mode = self.get(m, "mode", str, "mode")
        if mode is not None and mode not in tuple(Mode):
            self.fail("mode", f"{mode!r} is not {' or '.join(Mode)}")
            mode = None
        sha = self.get(m, "config_sha256", str, "config_sha256") or ""
        programs = self.programs(build_dir, m)
        maps = self.maps(m)
        node = self.node(m)
        frontends = self.frontends(m)
        map_init = self.map_init(build_dir, m, {mp.name: mp for mp in maps})
        runtime_config = self.runtime_config(m)
        self.build_kind(m, runtime_config)
        if mode == "bpf":
            self.bpf_mode(programs, maps, map_init)
        for i, p in enumerate(programs):
            if mode != "bpf" and any(a.is_cgroup for a in p.attach):
                self.fail(f"programs[{i}].attach", "cgroup hooks are the bpf mode's (socketLB)")
        if self.problems or mode is None or node is None:
            return None
        object_sha = {}
        for obj in dict.fromkeys(p.object for p in programs):
            digest = load_digest((build_dir / obj).read_bytes())
            if digest is None:
                self.fail("programs", f"{build_dir / obj}: not a 64-bit little-endian ELF object")
                return None
            object_sha[obj] = digest
        if runtime_config is not None and runtime_config[0] != ".bss":
            # frozen: the config is .rodata, constants to the verifier; new config, new load
            object_sha = {
                obj: hashlib.sha256(f"{d}:{runtime_config[1].hex()}".encode()).hexdigest()
                for obj, d in object_sha.items()
            }
        return Build(
            path=build_dir.resolve(),
            manifest=m,
            mode=Mode(mode),
            config_sha256=sha,
            programs=tuple(programs),
            maps=tuple(maps),
            node=node,
            frontends=tuple(frontends),
            map_init=map_init,
            runtime_config=runtime_config,
            object_sha256=object_sha,
        )

    def bpf_mode(
        self,
        programs: list[Program],
        maps: list[MapSpec],
        map_init: dict[str, tuple[tuple[bytes, bytes], ...]],
    ) -> None:
        """docs/datapath-bpf.md: every translation where the packet enters, no egress program;
        map_init writes plain entries (a map of maps has no hex image)."""
        for i, p in enumerate(programs):
            for j, a in enumerate(p.attach):
                if a.hook is Hook.TC_EGRESS:
                    self.fail(
                        f"programs[{i}].attach[{j}].hook",
                        f"tc_egress on {a.interface}: a bpf-mode build has no egress program",
                    )
        types = {mp.name: mp.type for mp in maps}
        for name in sorted(map_init):
            if types.get(name, "").endswith("_OF_MAPS"):
                self.fail("map_init", f"map {name} is a {types[name]}: map_init cannot fill it")

    def programs(self, build_dir: Path, m: Any) -> list[Program]:
        out = []
        seen: dict[tuple[str, str], str] = {}
        for path, p in self.items(m, "programs", "programs"):
            name = self.get(p, "name", str, f"{path}.name")
            obj = self.get(p, "object", str, f"{path}.object")
            section = self.get(p, "section", str, f"{path}.section")
            function = self.get(p, "function", str, f"{path}.function")
            if obj is not None:
                if os.path.basename(obj) != obj:
                    self.fail(
                        f"{path}.object", f"{obj!r} is not a file name in the build directory"
                    )
                elif not (build_dir / obj).is_file():
                    self.fail(f"{path}.object", f"{build_dir / obj} does not exist")
            attach = []
            for apath, a in self.items(p, "attach", f"{path}.attach"):
                role = self.get(a, "role", str, f"{apath}.role")
                iface = self.get(a, "interface", str, f"{apath}.interface")
                hook = self.get(a, "hook", str, f"{apath}.hook")
                if hook is not None and hook not in DEVICE_HOOKS + CGROUP_HOOKS:
                    self.fail(f"{apath}.hook",
                              f"{hook!r} is not one of {', '.join(DEVICE_HOOKS + CGROUP_HOOKS)}")
                    continue
                if hook in CGROUP_HOOKS:
                    if iface is not None and not (iface.startswith("/") and "\0" not in iface):
                        self.fail(f"{apath}.interface", f"{iface!r} is not a cgroup path")
                        continue
                elif iface is not None and not _valid_ifname_pattern(iface):
                    self.fail(f"{apath}.interface", f"{iface!r} is not a device name or glob")
                    continue
                if role is None or iface is None or hook is None:
                    continue
                key = (iface, hook)
                if key in seen:
                    self.fail(f"{apath}", f"{hook} on {iface} is also taken by {seen[key]}")
                seen[key] = str(name)
                attach.append(Attach(role, iface, Hook(hook)))
            if name and obj and section and function:
                out.append(Program(name, obj, section, function, tuple(attach)))
        if not out and not self.problems:
            self.fail("programs", "no program")
        return out

    def maps(self, m: Any) -> list[MapSpec]:
        out = []
        for path, mp in self.items(m, "maps", "maps"):
            name = self.get(mp, "name", str, f"{path}.name")
            mtype = self.get(mp, "type", str, f"{path}.type")
            sizes = [
                self.get(mp, k, int, f"{path}.{k}")
                for k in ("key_size", "value_size", "max_entries")
            ]
            pin = self.get(mp, "pin_path", str, f"{path}.pin_path")
            if pin is not None and name is not None:
                expected = f"{BPFFS_ROOT}/bpfgen/{{netns}}/{name}"
                if pin != expected:
                    self.fail(f"{path}.pin_path", f"{pin!r}: expected {expected!r}")
            if name and mtype and pin and all(s is not None for s in sizes):
                out.append(MapSpec(name, mtype, sizes[0], sizes[1], sizes[2], pin))
        return out

    def node(self, m: Any) -> NodeFacts | None:
        n = self.get(m, "node", dict, "node")
        if n is None:
            return None
        addresses = [
            self.address(a, f"node.addresses[{i}]")
            for i, a in enumerate(self.get(n, "addresses", list, "node.addresses") or [])
        ]
        if not addresses:
            self.fail("node.addresses", "no node address")
        timeouts = self.get(n, "timeouts", dict, "node.timeouts") or {}
        for key in ("tcp_established", "tcp_transitory", "udp"):
            self.get(timeouts, key, int, f"node.timeouts.{key}")
        name = self.get(n, "name", str, "node.name") or ""
        scheduler = self.get(n, "scheduler", str, "node.scheduler") or ""
        mark = self.get(n, "masquerade_mark", int, "node.masquerade_mark") or 0
        return NodeFacts(
            name=name,
            addresses=tuple(a for a in addresses if a is not None),
            snat_port_range=self.port_range(n, "snat_port_range", "node.snat_port_range"),
            node_port_range=self.port_range(n, "node_port_range", "node.node_port_range"),
            scheduler=scheduler,
            timeouts=dict(timeouts),
            masquerade_mark=mark,
        )

    def frontends(self, m: Any) -> list[Frontend]:
        spec = self.get(m, "specialization", dict, "specialization")
        out = []
        for path, f in self.items(spec, "frontends", "specialization.frontends"):
            kind = self.get(f, "kind", str, f"{path}.kind")
            if kind is not None and kind not in FRONTEND_KINDS:
                self.fail(f"{path}.kind", f"{kind!r} is not one of {', '.join(FRONTEND_KINDS)}")
            address = None
            if kind != "NodePort":
                address = self.address(
                    f.get("address") if isinstance(f, dict) else None, f"{path}.address"
                )
            elif isinstance(f, dict) and f.get("address") is not None:
                self.fail(f"{path}.address", "a NodePort frontend has no address (null)")
            port = self.port(f.get("port") if isinstance(f, dict) else None, f"{path}.port")
            proto = self.get(f, "protocol", str, f"{path}.protocol")
            if proto is not None and proto not in ("TCP", "UDP"):
                self.fail(f"{path}.protocol", f"{proto!r}: IPVS services here are TCP or UDP")
            scheduler = self.get(f, "scheduler", str, f"{path}.scheduler")
            persistence = f.get("persistence_timeout") if isinstance(f, dict) else None
            if persistence is not None and (not isinstance(persistence, int) or persistence < 1):
                self.fail(f"{path}.persistence_timeout", f"{persistence!r} is not seconds or null")
            backends = []
            for bpath, b in self.items(f, "backends", f"{path}.backends"):
                addr = self.address(
                    b.get("address") if isinstance(b, dict) else None, f"{bpath}.address"
                )
                bport = self.port(b.get("port") if isinstance(b, dict) else None, f"{bpath}.port")
                weight = self.get(b, "weight", int, f"{bpath}.weight")
                if addr and bport and weight is not None:
                    backends.append(Backend(addr, bport, weight))
            service = f.get("service", "") if isinstance(f, dict) else ""
            complete = kind and proto in ("TCP", "UDP") and scheduler
            if complete and port is not None and (kind == "NodePort" or address):
                out.append(
                    Frontend(
                        kind, str(service), address, port, proto, scheduler,
                        persistence, tuple(backends),
                    )
                )  # fmt: skip
        return out

    def map_init(
        self, build_dir: Path, m: Any, maps: dict[str, MapSpec]
    ) -> dict[str, tuple[tuple[bytes, bytes], ...]]:
        name = m.get("map_init") if isinstance(m, dict) else None
        if name is None:
            return {}
        if not isinstance(name, str) or os.path.basename(name) != name:
            self.fail("map_init", f"{name!r} is not a file name in the build directory")
            return {}
        where = build_dir / name
        try:
            raw = json.loads(where.read_text())
        except (OSError, ValueError) as exc:
            self.fail("map_init", f"{where}: cannot read ({exc})")
            return {}
        out: dict[str, tuple[tuple[bytes, bytes], ...]] = {}
        if not isinstance(raw, dict):
            self.fail("map_init", f"{where}: not an object of map name -> entries")
            return {}
        for map_name, entries in sorted(raw.items()):
            spec = maps.get(map_name)
            if spec is None:
                self.fail("map_init", f"{where}: map {map_name} is not in the manifest's maps")
                continue
            pairs = []
            for i, entry in enumerate(entries if isinstance(entries, list) else [None]):
                try:
                    key, value = bytes.fromhex(entry[0]), bytes.fromhex(entry[1])
                except (TypeError, ValueError, IndexError, KeyError):
                    self.fail("map_init", f"{where}: {map_name}[{i}] is not [key hex, value hex]")
                    continue
                if len(key) != spec.key_size or len(value) != spec.value_size:
                    self.fail(
                        "map_init",
                        f"{where}: {map_name}[{i}]: {len(key)}/{len(value)} bytes, the map "
                        f"holds {spec.key_size}/{spec.value_size}",
                    )
                    continue
                pairs.append((key, value))
            out[map_name] = tuple(pairs)
        return out

    def build_kind(self, m: Any, runtime_config: tuple[str, bytes] | None) -> None:
        """specialized: no runtime config; generic: the .bss image; frozen: the .rodata one."""
        kind = self.get(m, "build", str, "build")
        if kind is None:
            return
        if kind not in CONFIG_SECTION:
            self.fail("build", f"{kind!r} is not one of {', '.join(CONFIG_SECTION)}")
            return
        want = BuildKind(kind).config_section
        got = None if runtime_config is None else runtime_config[0]
        if got != want:
            self.fail(
                "runtime_config.map",
                f"{got!r}: a {kind} build needs "
                + ("no runtime config" if want is None else f"its config in {want}"),
            )

    def runtime_config(self, m: Any) -> tuple[str, bytes] | None:
        rc = m.get("runtime_config") if isinstance(m, dict) else None
        if rc is None:
            return None
        section = self.get(rc, "map", str, "runtime_config.map")
        hexdata = self.get(rc, "hex", str, "runtime_config.hex")
        if section is None or hexdata is None:
            return None
        try:
            return section, bytes.fromhex(hexdata)
        except ValueError:
            self.fail("runtime_config.hex", "not hex")
            return None


def load_digest(elf: bytes) -> str | None:
    """sha256 of what loading the object gives the kernel: every ELF section but the
    DWARF ones (`.debug_*` and their relocations), which libbpf never loads.

    Two builds whose sources differ only in comments (the generated header names
    the config's sha256) differ in .debug_line's source MD5s and nowhere else; the
    runtime compares this digest, not the file's bytes, to decide whether a sync must
    replace the programs or can rewrite maps in place. None: not an ELF64 LE file."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return None
    shoff = int.from_bytes(elf[0x28:0x30], "little")
    shentsize = int.from_bytes(elf[0x3A:0x3C], "little")
    shnum = int.from_bytes(elf[0x3C:0x3E], "little")
    shstrndx = int.from_bytes(elf[0x3E:0x40], "little")
    if shentsize < 64 or shoff + shnum * shentsize > len(elf) or shstrndx >= shnum:
        return None

    def header(i: int) -> tuple[int, int, bytes, int, int]:
        h = elf[shoff + i * shentsize : shoff + (i + 1) * shentsize]
        name, kind = int.from_bytes(h[0:4], "little"), int.from_bytes(h[4:8], "little")
        offset, size = int.from_bytes(h[24:32], "little"), int.from_bytes(h[32:40], "little")
        return name, kind, h[8:16] + h[40:48], offset, size  # flags, link, info

    _, _, _, str_off, str_size = header(shstrndx)
    names = elf[str_off : str_off + str_size]
    out = hashlib.sha256()
    for i in range(shnum):
        name_off, kind, attrs, offset, size = header(i)
        name = names[name_off : names.find(b"\0", name_off)]
        if name.startswith((b".debug_", b".rel.debug_")):
            continue
        body = size.to_bytes(8, "little") if kind == 8 else elf[offset : offset + size]  # NOBITS
        out.update(len(name).to_bytes(4, "little") + name + kind.to_bytes(4, "little") + attrs)
        out.update(len(body).to_bytes(8, "little") + body)
    return out.hexdigest()


def _valid_ifname_pattern(name: str) -> bool:
    """IFNAMSIZ-1 characters at most, no '/', no whitespace, not '.' or '..'."""
    return (
        0 < len(name) <= 15
        and "/" not in name
        and not any(c.isspace() for c in name)
        and (name not in (".", ".."))
    )
