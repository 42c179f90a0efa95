"""bpfgen_runtime.loader against the running kernel: load, maps, test_run, verifier errors."""

from __future__ import annotations

import errno
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bpfgen_runtime as rt
from bpfgen_runtime import libbpf, loader

pytestmark = pytest.mark.kernel

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_PIPE = 0, 2, 3
XDP_TX = 3
BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP = 3, 6
BPF_MAP_TYPE_HASH = 1

TC_PROG = "fixture_tc_rewrite"
SYS_BPFFS = Path("/sys/fs/bpf")


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def ethernet_frame(ether_type: int = ETH_P_IP, size: int = 64) -> bytes:
    """dst 02:00:00:00:00:02, src 02:00:00:00:00:01; IPv4/UDP 198.18.0.1:40000 -> 198.18.0.2:53."""
    eth = bytes.fromhex("020000000002020000000001") + struct.pack("!H", ether_type)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, IHL 5
        0,
        size - len(eth),  # total length
        0,
        0,
        64,  # TTL
        17,  # UDP
        0,  # checksum: nothing here reads it
        bytes([198, 18, 0, 1]),
        bytes([198, 18, 0, 2]),
    )
    udp = struct.pack("!HHHH", 40000, 53, size - len(eth) - len(ip), 0)
    return (eth + ip + udp).ljust(size, b"\0")


def with_byte(frame: bytes, offset: int, value: int) -> bytes:
    return frame[:offset] + bytes([value]) + frame[offset + 1 :]


def hexdump(data: bytes) -> str:
    return "\n".join(f"  {i:04x}  {data[i : i + 16].hex(' ')}" for i in range(0, len(data), 16))


FRAME = ethernet_frame()
ARP_FRAME = ethernet_frame(ETH_P_ARP)


# --- the tc fixture as a table: {name, config, packet in, verdict, packet out} ----------------


@dataclass(frozen=True)
class TcCase:
    name: str
    packet: bytes
    retval: int
    out: bytes
    initial_values: dict[str, bytes] = field(default_factory=dict)
    verdicts: dict[int, int] = field(default_factory=dict)  # fixture_verdicts: EtherType -> verdict


TC_CASES = [
    TcCase(
        "defaults: first payload byte zeroed, TC_ACT_OK",
        FRAME,
        TC_ACT_OK,
        with_byte(FRAME, ETH_HLEN, 0x00),
    ),
    TcCase(
        ".bss fixture_fill set before load",
        FRAME,
        TC_ACT_OK,
        with_byte(FRAME, ETH_HLEN, 0x7F),
        initial_values={".bss": b"\x7f"},
    ),
    TcCase(
        ".rodata default verdict set before load",
        FRAME,
        TC_ACT_SHOT,
        with_byte(FRAME, ETH_HLEN, 0x00),
        initial_values={".rodata": u32(TC_ACT_SHOT)},
    ),
    TcCase(
        "hash map verdict for IPv4",
        FRAME,
        TC_ACT_PIPE,
        with_byte(FRAME, ETH_HLEN, 0x00),
        verdicts={ETH_P_IP: TC_ACT_PIPE},
    ),
    TcCase(
        "hash map verdict for another EtherType does not apply",
        FRAME,
        TC_ACT_OK,
        with_byte(FRAME, ETH_HLEN, 0x00),
        verdicts={ETH_P_ARP: TC_ACT_SHOT},
    ),
    TcCase(
        "ARP frame, its verdict from the map",
        ARP_FRAME,
        TC_ACT_SHOT,
        with_byte(ARP_FRAME, ETH_HLEN, 0x7F),
        initial_values={".bss": b"\x7f"},
        verdicts={ETH_P_ARP: TC_ACT_SHOT},
    ),
    TcCase(
        # ARP: for IPv4 the kernel's test run refuses a frame without an IP header.
        "header only: nothing rewritten, TC_ACT_OK",
        ARP_FRAME[:ETH_HLEN],
        TC_ACT_OK,
        ARP_FRAME[:ETH_HLEN],
        initial_values={".bss": b"\x7f"},
        verdicts={ETH_P_ARP: TC_ACT_SHOT},
    ),
]


@pytest.mark.parametrize("case", TC_CASES, ids=[c.name for c in TC_CASES])
def test_tc_rewrite(bpf_objects: dict[str, Path], case: TcCase) -> None:
    obj_path = bpf_objects["tc_rewrite"]
    with rt.open_object(obj_path, initial_values=case.initial_values) as obj:
        for ether_type, verdict in case.verdicts.items():
            obj.maps["fixture_verdicts"].update(u32(ether_type), u32(verdict))
        result = rt.test_run(obj.programs[TC_PROG], case.packet)
    shown = (
        f"object {obj_path} (source tests/kernel/fixtures/tc_rewrite.bpf.c)\n"
        f"packet in:\n{hexdump(case.packet)}\npacket out:\n{hexdump(result.data)}\n"
        f"expected out:\n{hexdump(case.out)}"
    )
    assert (result.retval, result.data) == (case.retval, case.out), shown


# --- objects, programs, maps -------------------------------------------------------------------


def test_programs_and_maps_are_described(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        assert list(obj.programs) == [TC_PROG]
        prog = obj.programs[TC_PROG]
        assert (prog.name, prog.section, prog.type) == (TC_PROG, "tc", BPF_PROG_TYPE_SCHED_CLS)
        assert prog.fd >= 0
        verdicts = obj.maps["fixture_verdicts"]
        assert (verdicts.type, verdicts.key_size, verdicts.value_size, verdicts.max_entries) == (
            BPF_MAP_TYPE_HASH,
            4,
            4,
            16,
        )
        packets = obj.maps["fixture_packets"]
        assert (packets.type, packets.percpu, packets.value_size) == (
            libbpf.BPF_MAP_TYPE_PERCPU_ARRAY,
            True,
            8,
        )
        internal = sorted(name.rpartition(".")[2] for name in obj.maps if "." in name)
        assert internal == ["bss", "rodata"]


def test_hash_map_update_lookup_delete_keys(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        verdicts = obj.maps["fixture_verdicts"]
        assert verdicts.lookup(u32(ETH_P_IP)) is None
        assert list(verdicts.keys()) == []

        verdicts.update(u32(ETH_P_IP), u32(TC_ACT_SHOT))
        verdicts.update(u32(ETH_P_ARP), u32(TC_ACT_OK))
        assert verdicts.lookup(u32(ETH_P_IP)) == u32(TC_ACT_SHOT)
        assert sorted(verdicts.keys()) == sorted([u32(ETH_P_IP), u32(ETH_P_ARP)])
        assert dict(verdicts.items()) == {
            u32(ETH_P_IP): u32(TC_ACT_SHOT),
            u32(ETH_P_ARP): u32(TC_ACT_OK),
        }

        verdicts.update(u32(ETH_P_IP), u32(TC_ACT_PIPE), rt.BPF_EXIST)
        assert verdicts.lookup(u32(ETH_P_IP)) == u32(TC_ACT_PIPE)
        with pytest.raises(rt.RuntimeOpError) as exc:
            verdicts.update(u32(ETH_P_IP), u32(TC_ACT_OK), rt.BPF_NOEXIST)
        assert str(exc.value) == "update map fixture_verdicts: File exists"

        assert verdicts.delete(u32(ETH_P_IP)) is True
        assert verdicts.delete(u32(ETH_P_IP)) is False
        assert list(verdicts.keys()) == [u32(ETH_P_ARP)]


def test_map_sizes_are_checked(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        verdicts = obj.maps["fixture_verdicts"]
        with pytest.raises(rt.RuntimeOpError) as exc:
            verdicts.lookup(b"\x08\x00")
        assert str(exc.value) == (
            "lookup in map fixture_verdicts: Invalid argument: key is 2 bytes, the map's keys are 4"
        )
        with pytest.raises(rt.RuntimeOpError) as exc:
            verdicts.update(u32(ETH_P_IP), b"\x02")
        assert str(exc.value) == (
            "update map fixture_verdicts: Invalid argument: "
            "value is 1 bytes, the map's values are 4"
        )


def test_percpu_lookup_has_one_value_per_possible_cpu(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        packets = obj.maps["fixture_packets"]
        before = packets.lookup_percpu(u32(0))
        assert before is not None
        assert len(before) == rt.possible_cpus()
        assert before == [bytes(8)] * rt.possible_cpus()

        rt.test_run(obj.programs[TC_PROG], FRAME, repeat=3)
        rt.test_run(obj.programs[TC_PROG], FRAME)
        after = packets.lookup_percpu(u32(0))
        assert after is not None
        assert sum(struct.unpack("=Q", value)[0] for value in after) == 4

        packets.update(u32(0), struct.pack("=Q", 7))  # the same value on every CPU
        assert packets.lookup_percpu(u32(0)) == [struct.pack("=Q", 7)] * rt.possible_cpus()
        packets.update_percpu(u32(0), [struct.pack("=Q", i) for i in range(rt.possible_cpus())])
        assert packets.lookup_percpu(u32(0)) == [
            struct.pack("=Q", i) for i in range(rt.possible_cpus())
        ]
        assert packets.lookup_percpu(u32(1)) is None  # past max_entries

        with pytest.raises(rt.RuntimeOpError) as exc:
            packets.lookup(u32(0))
        assert "use lookup_percpu" in str(exc.value)


def test_internal_map_image_after_load(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"], initial_values={".bss": b"\x2a"}) as obj:
        (bss,) = (m for name, m in obj.maps.items() if name.endswith(".bss"))
        assert bss.lookup(u32(0)) == b"\x2a"
        bss.update(u32(0), b"\x11")  # globals are an array map: change them live
        result = rt.test_run(obj.programs[TC_PROG], FRAME)
    assert result.data[ETH_HLEN] == 0x11


def test_initial_values_are_checked(bpf_objects: dict[str, Path]) -> None:
    obj_path = bpf_objects["tc_rewrite"]
    with pytest.raises(rt.RuntimeOpError) as exc:
        rt.open_object(obj_path, initial_values={".data": b"\x01"})
    assert str(exc.value) == (
        f"set initial value of .data in {obj_path}: Invalid argument: "
        "no internal map named *.data (internal maps: tc_rewri.bss, tc_rewri.rodata)"
    )
    with pytest.raises(rt.RuntimeOpError) as exc:
        rt.open_object(obj_path, initial_values={".rodata": b"\x01"})
    assert str(exc.value) == (
        f"set initial value of .rodata in {obj_path}: Invalid argument: "
        "1 bytes given, map tc_rewri.rodata holds 4"
    )


def test_info(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        info = obj.programs[TC_PROG].info()
    assert (info.name, info.section, info.type) == (TC_PROG, "tc", BPF_PROG_TYPE_SCHED_CLS)
    assert info.id > 0
    assert info.verified_insns > 0
    assert info.xlated_insns > 0
    assert info.jited_len > 0
    assert len(info.tag) == 16
    int(info.tag, 16)


def test_verifier_log_of_an_accepted_program(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        assert "processed" in obj.programs[TC_PROG].verifier_log
    with rt.open_object(bpf_objects["tc_rewrite"], log_level=0) as obj:
        assert obj.programs[TC_PROG].verifier_log == ""


def test_xdp_test_run(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["xdp_swap"]) as obj:
        prog = obj.programs["fixture_xdp_swap"]
        assert (prog.section, prog.type) == ("xdp", BPF_PROG_TYPE_XDP)
        result = rt.test_run(prog, FRAME)
        twice = rt.test_run(prog, FRAME, repeat=2)
    swapped = FRAME[6:12] + FRAME[0:6] + FRAME[12:]
    assert result.retval == XDP_TX
    assert result.data == swapped, f"in:\n{hexdump(FRAME)}\nout:\n{hexdump(result.data)}"
    # Repetitions run on the same buffer: two swaps give the frame back.
    assert (twice.retval, twice.data) == (XDP_TX, FRAME)
    assert twice.duration_ns > 0


def test_test_run_output_too_small(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["xdp_swap"]) as obj, pytest.raises(rt.RuntimeOpError) as exc:
        rt.test_run(obj.programs["fixture_xdp_swap"], FRAME, data_out_size=16)
    assert exc.value.errno == errno.ENOSPC
    assert str(exc.value) == (
        "test run program fixture_xdp_swap: No space left on device: "
        "the output is 64 bytes, data_out_size is 16"
    )


def test_verify_object(bpf_objects: dict[str, Path], tmp_path: Path) -> None:
    (record,) = rt.verify_object(bpf_objects["tc_rewrite"], log_dir=tmp_path)
    assert (record.name, record.section) == (TC_PROG, "tc")
    assert record.verified_insns > 0
    assert record.xlated_insns > 0
    assert list(tmp_path.iterdir()) == []  # logs are saved for rejected programs only


# --- verifier rejections and other load failures -----------------------------------------------


def assert_rejection(exc: rt.VerifierRejected, obj_path: Path) -> None:
    assert exc.program == "fixture_unbounded"
    assert exc.section == "tc"
    assert exc.errno == errno.EACCES
    message = str(exc)
    assert message.startswith(
        f"verifier rejected program fixture_unbounded (sec tc) in {obj_path}:\n"
    )
    assert "invalid access to packet" in message
    assert message.endswith(f"\nfull log: {exc.log_path}")
    assert exc.log_tail in message
    assert len(exc.log_tail.splitlines()) <= rt.VerifierRejected.TAIL_LINES
    log = Path(exc.log_path).read_text()
    assert "invalid access to packet" in log
    assert log.rstrip("\n").endswith(exc.log_tail)


def test_verifier_rejection_names_the_program(bpf_objects: dict[str, Path], tmp_path: Path) -> None:
    obj_path = bpf_objects["reject_unbounded"]
    with pytest.raises(rt.VerifierRejected) as exc:
        rt.open_object(obj_path, log_dir=tmp_path / "logs")
    assert_rejection(exc.value, obj_path)
    assert exc.value.log_path == str(tmp_path / "logs" / "fixture_unbounded.verifier.log")
    assert isinstance(exc.value, rt.RuntimeOpError)


def test_verifier_rejection_log_in_a_temporary_file(bpf_objects: dict[str, Path]) -> None:
    with pytest.raises(rt.VerifierRejected) as exc:
        rt.verify_object(bpf_objects["reject_unbounded"], log_dir=None)
    try:
        assert_rejection(exc.value, bpf_objects["reject_unbounded"])
        assert Path(exc.value.log_path).name.endswith(".verifier.log")
    finally:
        os.unlink(exc.value.log_path)


def test_verifier_rejection_at_log_level_0(bpf_objects: dict[str, Path], tmp_path: Path) -> None:
    """libbpf loads without a log first, then again with level 1 into our buffer."""
    obj_path = bpf_objects["reject_unbounded"]
    with pytest.raises(rt.VerifierRejected) as exc:
        rt.open_object(obj_path, log_level=0, log_dir=tmp_path)
    assert_rejection(exc.value, obj_path)


def test_small_log_buffer_grows(
    bpf_objects: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel answers ENOSPC when the log does not fit, also for an accepted program."""
    monkeypatch.setattr(loader, "LOG_BUF_SIZE", 128)
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        assert "processed" in obj.programs[TC_PROG].verifier_log
    with pytest.raises(rt.VerifierRejected) as exc:
        rt.open_object(bpf_objects["reject_unbounded"], log_dir=tmp_path)
    assert_rejection(exc.value, bpf_objects["reject_unbounded"])


def test_missing_object(tmp_path: Path, bpf_objects: dict[str, Path]) -> None:
    missing = tmp_path / "missing.bpf.o"
    with pytest.raises(rt.RuntimeOpError) as exc:
        rt.open_object(missing)
    assert str(exc.value).startswith(f"open object {missing}: No such file or directory: libbpf: ")


def test_not_an_elf_object(tmp_path: Path, bpf_objects: dict[str, Path]) -> None:
    garbage = tmp_path / "garbage.bpf.o"
    garbage.write_bytes(b"not an ELF file")
    with pytest.raises(rt.RuntimeOpError) as exc:
        rt.open_object(garbage)
    assert str(exc.value).startswith(f"open object {garbage}: BPF object format invalid: ")


# --- pinning -------------------------------------------------------------------------------------


def test_no_pin_root_touches_no_bpffs(bpf_objects: dict[str, Path]) -> None:
    """fixture_verdicts is LIBBPF_PIN_BY_NAME: libbpf alone would pin it at /sys/fs/bpf."""
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        assert all(m.pin_path is None for m in obj.maps.values())
        assert not (SYS_BPFFS / "fixture_verdicts").exists()
        if SYS_BPFFS.is_dir():
            assert not [p for p in os.listdir(SYS_BPFFS) if p.startswith("fixture_")]


def test_pin_root_pins_and_reuses(bpf_objects: dict[str, Path], bpffs: Path) -> None:
    pin_root = bpffs / "bpfgen"
    pinned = pin_root / "fixture_verdicts"
    with rt.open_object(bpf_objects["tc_rewrite"], pin_root=pin_root) as obj:
        assert obj.maps["fixture_verdicts"].pin_path == str(pinned)
        assert obj.maps["fixture_packets"].pin_path is None  # not declared pinned
        obj.maps["fixture_verdicts"].update(u32(ETH_P_IP), u32(TC_ACT_SHOT))
    assert pinned.exists()  # outlives the object

    # A second load reuses the pinned map, entries included: what `sync` relies on.
    with rt.open_object(bpf_objects["tc_rewrite"], pin_root=pin_root) as obj:
        assert obj.maps["fixture_verdicts"].lookup(u32(ETH_P_IP)) == u32(TC_ACT_SHOT)
        assert rt.test_run(obj.programs[TC_PROG], FRAME).retval == TC_ACT_SHOT


def test_pin_root_not_on_bpffs(bpf_objects: dict[str, Path], tmp_path: Path) -> None:
    obj_path = bpf_objects["tc_rewrite"]
    with pytest.raises(rt.RuntimeOpError) as exc:
        rt.open_object(obj_path, pin_root=tmp_path)
    assert not isinstance(exc.value, rt.VerifierRejected)
    assert str(exc.value).startswith(f"load object {obj_path}: Invalid argument: libbpf: ")
    assert f"specified path {tmp_path}/fixture_verdicts is not on BPF FS" in exc.value.detail


def test_pin_program_and_map(bpf_objects: dict[str, Path], bpffs: Path) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        prog = obj.programs[TC_PROG]
        prog.pin(bpffs / "prog")
        obj.maps["fixture_packets"].pin(bpffs / "packets")
        fd = libbpf.bpf_obj_get(str(bpffs / "prog"))
        try:
            info = libbpf.BpfProgInfo()
            libbpf.bpf_obj_get_info_by_fd(fd, info)
            assert info.id == prog.info().id
        finally:
            os.close(fd)
    assert (bpffs / "packets").exists()


# --- lifetime ----------------------------------------------------------------------------------


def test_closed_object_refuses_its_fds(bpf_objects: dict[str, Path]) -> None:
    with rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        verdicts = obj.maps["fixture_verdicts"]
        prog = obj.programs[TC_PROG]
    assert obj.closed
    obj.close()  # idempotent
    with pytest.raises(rt.RuntimeOpError) as exc:
        verdicts.lookup(u32(ETH_P_IP))
    assert str(exc.value) == (
        "lookup in map fixture_verdicts: Bad file descriptor: "
        f"object {bpf_objects['tc_rewrite']} is closed"
    )
    with pytest.raises(rt.RuntimeOpError):
        rt.test_run(prog, FRAME)


def test_object_closed_when_the_block_raises(bpf_objects: dict[str, Path]) -> None:
    with pytest.raises(KeyError), rt.open_object(bpf_objects["tc_rewrite"]) as obj:
        obj.maps["no_such_map"]
    assert obj.closed


# --- libbpf's own messages -----------------------------------------------------------------------


def test_libbpf_messages_outside_a_capture_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "missing.bpf.o"
    with caplog.at_level(logging.WARNING, logger=libbpf.logger.name), pytest.raises(OSError):
        libbpf.bpf_object__open_file(str(missing), libbpf.BpfObjectOpenOpts())
    assert [r.getMessage() for r in caplog.records] == [
        f"libbpf: elf: failed to open {missing}: No such file or directory"
    ]


def test_libbpf_debug_messages_are_formatted(
    bpf_objects: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Every message went through vsnprintf with its va_list: no conversion left unexpanded."""
    with caplog.at_level(logging.DEBUG, logger=libbpf.logger.name):
        rt.open_object(bpf_objects["tc_rewrite"]).close()
    messages = [r.getMessage() for r in caplog.records if r.name == libbpf.logger.name]
    assert any("fixture_verdicts" in m for m in messages), messages
    assert all(m.startswith("libbpf: ") for m in messages), messages
    assert not [m for m in messages if "%s" in m or "%d" in m], messages
