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
from dataclasses import dataclass, field
from pathlib import Path

from .contract import Hook, Mode
from .contract import manifest as manifest_model
from .contract.manifest import Manifest
from .errors import RuntimeOpError

BPFFS_ROOT = "/sys/fs/bpf"  # where the manifest's pin path templates point
FRONTEND_KINDS = ("ClusterIP", "NodePort", "ExternalIP", "LoadBalancer", "PodShortcut")
#: bpf mode: a hidden frontend (an address of 0.0.0.0/8 no packet is looked up at) for a
#: Service port's pods when both traffic policies are Local (docs/datapath-bpf.md).
POD_SHORTCUT = "PodShortcut"


class InputRefused(RuntimeOpError):
    """The input (build directory, netns, flags) cannot be used here; nothing was changed.

    `problems` lists every reason, each naming the file or thing and what was expected.
    """

    exit_code = 2

    def __init__(self, op: str, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(op, errno.EINVAL, "; ".join(problems))
        self.args = (f"{op}: " + ("\n  ".join(["refused:", *problems])),)


# The manifest's entries are the runtime's view of them (the contract's model).
Attach = manifest_model.Attach
Program = manifest_model.ProgramEntry
Backend = manifest_model.BackendEntry
Frontend = manifest_model.FrontendEntry
NodeFacts = manifest_model.NodeEntry


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
class Build:
    """What the runtime needs of a build directory, checked."""

    path: Path
    manifest: Manifest = field(repr=False)
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
        found = {f.address for f in self.frontends
                 if f.address is not None and f.kind != POD_SHORTCUT}  # fmt: skip
        return sorted(found, key=ipaddress.IPv4Address)

    def objects(self) -> list[str]:
        """Object files in manifest order, each once."""
        return list(dict.fromkeys(p.object for p in self.programs))


def read_build(path: str | os.PathLike[str]) -> Build:
    """Read and check `path`/manifest.json and what it names; InputRefused lists every problem.

    Two passes: the contract's model decodes the file (shapes, enums, required and
    unknown fields), then `_Checker` holds the decoded values to what this node needs
    (addresses, ports, pin paths, files that exist, one program per hook)."""
    build_dir = Path(path)
    op = f"read build directory {build_dir}"
    manifest_path = build_dir / "manifest.json"
    try:
        data = json.loads(manifest_path.read_text())
    except OSError as exc:
        raise InputRefused(
            op, [f"{manifest_path}: cannot read ({exc.strerror}); is it a bpfgen build directory?"]
        ) from exc
    except ValueError as exc:
        raise InputRefused(op, [f"{manifest_path}: not JSON ({exc})"]) from exc
    decoded = manifest_model.Problems()
    manifest = manifest_model.decode_manifest(data, decoded)
    if manifest is None:
        raise InputRefused(op, [f"{manifest_path}: {p}" for p in decoded])
    checker = _Checker(str(manifest_path))
    build = checker.build(build_dir, manifest)
    if checker.problems or build is None:
        raise InputRefused(op, checker.problems)
    return build


class _Checker:
    """Holds a decoded manifest to what the node needs; each problem names its path."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.where}: {path}: {message}")

    def address(self, value: str, path: str) -> None:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            self.fail(path, f"{value!r} is not an IPv4 address")

    def port(self, value: int, path: str) -> None:
        if not 1 <= value <= 65535:
            self.fail(path, f"{value!r} is not a port (1-65535)")

    def port_range(self, pair: tuple[int, int], path: str) -> None:
        self.port(pair[0], f"{path}[0]")
        self.port(pair[1], f"{path}[1]")
        if pair[0] > pair[1]:
            self.fail(path, f"{pair[0]} > {pair[1]}")

    def build(self, build_dir: Path, m: Manifest) -> Build | None:
        self.programs(build_dir, m)
        maps = self.maps(m)
        self.node(m.node)
        self.frontends(m.specialization.frontends)
        map_init = self.map_init(build_dir, m, {mp.name: mp for mp in maps})
        runtime_config = self.runtime_config(m)
        if m.mode is Mode.BPF:
            self.bpf_mode(m.programs, maps, map_init)
        for i, p in enumerate(m.programs):
            if m.mode is not Mode.BPF and any(a.is_cgroup for a in p.attach):
                self.fail(f"programs[{i}].attach", "cgroup hooks are the bpf mode's (socketLB)")
        if self.problems:
            return None
        object_sha = {}
        for obj in dict.fromkeys(p.object for p in m.programs):
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
            mode=m.mode,
            config_sha256=m.config_sha256,
            programs=m.programs,
            maps=tuple(maps),
            node=m.node,
            frontends=m.specialization.frontends,
            map_init=map_init,
            runtime_config=runtime_config,
            object_sha256=object_sha,
        )

    def bpf_mode(
        self,
        programs: tuple[Program, ...],
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

    def programs(self, build_dir: Path, m: Manifest) -> None:
        seen: dict[tuple[str, str], str] = {}
        for i, p in enumerate(m.programs):
            path = f"programs[{i}]"
            if os.path.basename(p.object) != p.object:
                self.fail(f"{path}.object",
                          f"{p.object!r} is not a file name in the build directory")  # fmt: skip
            elif not (build_dir / p.object).is_file():
                self.fail(f"{path}.object", f"{build_dir / p.object} does not exist")
            for j, a in enumerate(p.attach):
                apath = f"{path}.attach[{j}]"
                if a.is_cgroup:
                    if not (a.interface.startswith("/") and "\0" not in a.interface):
                        self.fail(f"{apath}.interface", f"{a.interface!r} is not a cgroup path")
                        continue
                elif not _valid_ifname_pattern(a.interface):
                    self.fail(f"{apath}.interface", f"{a.interface!r} is not a device name or glob")
                    continue
                key = (a.interface, a.hook.value)
                if key in seen:
                    self.fail(apath, f"{a.hook} on {a.interface} is also taken by {seen[key]}")
                seen[key] = p.name
        if not m.programs:
            self.fail("programs", "no program")

    def maps(self, m: Manifest) -> list[MapSpec]:
        out = []
        for i, mp in enumerate(m.maps):
            path = f"maps[{i}]"
            expected = f"{BPFFS_ROOT}/bpfgen/{{netns}}/{mp.name}"
            if mp.pin_path != expected:
                self.fail(f"{path}.pin_path", f"{mp.pin_path!r}: expected {expected!r}")
                continue
            out.append(MapSpec(mp.name, mp.type, mp.key_size, mp.value_size, mp.max_entries,
                               mp.pin_path))  # fmt: skip
        return out

    def node(self, n: NodeFacts) -> None:
        for i, a in enumerate(n.addresses):
            self.address(a, f"node.addresses[{i}]")
        if not n.addresses:
            self.fail("node.addresses", "no node address")
        self.port_range(n.snat_port_range, "node.snat_port_range")
        self.port_range(n.node_port_range, "node.node_port_range")

    def frontends(self, frontends: tuple[Frontend, ...]) -> None:
        for i, f in enumerate(frontends):
            path = f"specialization.frontends[{i}]"
            if f.kind not in FRONTEND_KINDS:
                self.fail(f"{path}.kind", f"{f.kind!r} is not one of {', '.join(FRONTEND_KINDS)}")
            if f.kind != "NodePort":
                if f.address is None:
                    self.fail(f"{path}.address", "None is not an IPv4 address")
                else:
                    self.address(f.address, f"{path}.address")
            elif f.address is not None:
                self.fail(f"{path}.address", "a NodePort frontend has no address (null)")
            self.port(f.port, f"{path}.port")
            if f.protocol not in ("TCP", "UDP"):
                self.fail(f"{path}.protocol", f"{f.protocol!r}: IPVS services here are TCP or UDP")
            if f.persistence_timeout is not None and f.persistence_timeout < 1:
                self.fail(f"{path}.persistence_timeout",
                          f"{f.persistence_timeout!r} is not seconds or null")  # fmt: skip
            for j, b in enumerate(f.backends):
                self.address(b.address, f"{path}.backends[{j}].address")
                self.port(b.port, f"{path}.backends[{j}].port")

    def map_init(
        self, build_dir: Path, m: Manifest, maps: dict[str, MapSpec]
    ) -> dict[str, tuple[tuple[bytes, bytes], ...]]:
        name = m.map_init
        if name is None:
            return {}
        if os.path.basename(name) != name:
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

    def runtime_config(self, m: Manifest) -> tuple[str, bytes] | None:
        """specialized: no runtime config; generic: the .bss image; frozen: the .rodata one."""
        rc = m.runtime_config
        want = m.build.config_section
        got = None if rc is None else rc.map
        if got != want:
            self.fail(
                "runtime_config.map",
                f"{got!r}: a {m.build} build needs "
                + ("no runtime config" if want is None else f"its config in {want}"),
            )
        if rc is None:
            return None
        try:
            return rc.map, bytes.fromhex(rc.hex)
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
