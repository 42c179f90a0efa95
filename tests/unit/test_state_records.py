"""The state file's typed records (runtime/state.py): a state file written when they were
plain dicts and lists loads and is written back byte for byte; a record without a key it
needs, or with a value of the wrong type, is refused naming the field and the entry."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bpfgen_runtime.state import (
    Attachment,
    CgroupLink,
    DummyRecord,
    IpvsDrainingRecord,
    IpvsServiceRecord,
    IpvsTimeoutsRecord,
    IpvsTimeoutValues,
    State,
    SysctlRecord,
    from_json_checked,
    load_checked,
    state_path,
)

# Written by the runtime before the records were typed (every kind of record filled).
OLD_STATE = """\
{
  "attachments": [
    {
      "device": "up0",
      "hook": "ingress",
      "ifindex": 4,
      "prog_id": 101,
      "program": "ingress",
      "xdp_mode": null
    },
    {
      "device": "up0",
      "hook": "xdp",
      "ifindex": 4,
      "prog_id": 102,
      "program": "svc_xdp",
      "xdp_mode": "skb"
    }
  ],
  "bpffs": "/sys/fs/bpf",
  "bpffs_mounted": true,
  "build_dir": "/tmp/build",
  "cgroup": "/sys/fs/cgroup/kubepods",
  "clsact_created": {
    "up0": 4
  },
  "config_sha256": "abababab",
  "dirs_created": [
    "/sys/fs/bpf/bpfgen",
    "/sys/fs/bpf/bpfgen/bpfgen-t1"
  ],
  "dummy": {
    "ifindex": 7,
    "name": "bpfgen-ipvs0"
  },
  "ipvs_draining": [
    [
      6,
      "10.96.0.10",
      80,
      "10.244.1.5",
      8080
    ]
  ],
  "ipvs_enabled": true,
  "ipvs_services": [
    [
      6,
      "10.96.0.10",
      80
    ],
    [
      17,
      "10.96.0.10",
      53
    ]
  ],
  "ipvs_timeouts": {
    "previous": {
      "tcp": 900,
      "tcp_fin": 120,
      "udp": 300
    },
    "value": {
      "tcp": 7440,
      "tcp_fin": 240,
      "udp": 300
    }
  },
  "links": [
    {
      "cgroup": "/sys/fs/cgroup/kubepods",
      "hook": "cgroup_connect4",
      "pin": "/sys/fs/bpf/bpfgen/bpfgen-t1/link_cgroup_connect4",
      "prog_id": 103,
      "program": "sock_connect4"
    }
  ],
  "mode": "ipvs",
  "netns": "bpfgen-t1",
  "nft_sha256": "efefefef",
  "object_sha256": {
    "ingress.bpf.o": "cdcdcdcd"
  },
  "pin_dir": "/sys/fs/bpf/bpfgen/bpfgen-t1",
  "pins": [
    "/sys/fs/bpf/bpfgen/bpfgen-t1/bpfgen_nat"
  ],
  "runtime_config_sha256": "",
  "sysctls": {
    "net.ipv4.ip_forward": {
      "previous": "0",
      "value": "1"
    },
    "net.ipv4.ip_local_reserved_ports": {
      "previous": "",
      "value": "30000-32767"
    }
  },
  "version": 1
}
"""


def test_an_old_state_file_loads_typed_and_is_written_back_byte_for_byte() -> None:
    state = from_json_checked(OLD_STATE)
    assert state.to_json() == OLD_STATE
    assert State.from_json(OLD_STATE).to_json() == OLD_STATE
    assert state.attachments[1] == Attachment(
        program="svc_xdp", device="up0", ifindex=4, hook="xdp", prog_id=102, xdp_mode="skb"
    )
    assert state.attachments[0].xdp_mode is None
    assert state.links[0].pin.endswith("link_cgroup_connect4") and state.links[0].prog_id == 103
    assert state.dummy == DummyRecord(name="bpfgen-ipvs0", ifindex=7)
    assert state.ipvs_services == [(6, "10.96.0.10", 80), (17, "10.96.0.10", 53)]
    assert state.ipvs_services[1].protocol == 17
    assert state.ipvs_draining[0].real_port == 8080
    assert state.ipvs_timeouts is not None and state.ipvs_timeouts.value.tcp == 7440
    assert state.sysctls["net.ipv4.ip_forward"] == SysctlRecord(previous="0", value="1")


def test_a_state_made_of_records_is_written_as_before() -> None:
    old = json.loads(OLD_STATE)
    record_fields = ("attachments", "links", "dummy", "ipvs_services", "ipvs_draining",
                     "ipvs_timeouts", "sysctls")  # fmt: skip
    state = State(**{k: v for k, v in old.items() if k not in record_fields})
    state.attachments = [
        Attachment("ingress", "up0", 4, "ingress", 101, None),
        Attachment("svc_xdp", "up0", 4, "xdp", 102, "skb"),
    ]
    pin = "/sys/fs/bpf/bpfgen/bpfgen-t1/link_cgroup_connect4"
    cgroup = "/sys/fs/cgroup/kubepods"
    state.links = [CgroupLink("sock_connect4", "cgroup_connect4", cgroup, pin, 103)]
    state.dummy = DummyRecord("bpfgen-ipvs0", 7)
    state.ipvs_services = [IpvsServiceRecord(6, "10.96.0.10", 80),
                           IpvsServiceRecord(17, "10.96.0.10", 53)]  # fmt: skip
    state.ipvs_draining = [IpvsDrainingRecord(6, "10.96.0.10", 80, "10.244.1.5", 8080)]
    state.ipvs_timeouts = IpvsTimeoutsRecord(
        previous=IpvsTimeoutValues(tcp=900, tcp_fin=120, udp=300),
        value=IpvsTimeoutValues(tcp=7440, tcp_fin=240, udp=300),
    )
    state.sysctls = {
        "net.ipv4.ip_forward": SysctlRecord("0", "1"),
        "net.ipv4.ip_local_reserved_ports": SysctlRecord("", "30000-32767"),
    }
    assert state.to_json() == OLD_STATE


def test_keys_a_record_does_not_know_are_left_out() -> None:
    raw = json.loads(OLD_STATE)
    raw["attachments"][0]["object"] = "ingress.bpf.o"  # another version's key
    raw["sysctls"]["net.ipv4.ip_forward"]["when"] = 1
    assert from_json_checked(json.dumps(raw)).to_json() == OLD_STATE


def _del(*path: str | int) -> Callable[[Any], None]:
    def damage(raw: Any) -> None:
        for p in path[:-1]:
            raw = raw[p]
        del raw[path[-1]]

    return damage


def _set(value: object, *path: str | int) -> Callable[[Any], None]:
    def damage(raw: Any) -> None:
        for p in path[:-1]:
            raw = raw[p]
        raw[path[-1]] = value

    return damage


BAD_RECORDS: dict[str, tuple[Callable[[Any], None], str]] = {
    "attachment without prog_id": (_del("attachments", 1, "prog_id"),
                                   "attachments[1] has no prog_id"),
    "attachment without xdp_mode": (_del("attachments", 0, "xdp_mode"),
                                    "attachments[0] has no xdp_mode"),
    "ifindex a string": (_set("4", "attachments", 0, "ifindex"),
                         "attachments[0].ifindex is a string, not an integer"),
    "prog_id a boolean": (_set(True, "attachments", 0, "prog_id"),
                          "attachments[0].prog_id is a boolean, not an integer"),
    "attachment a list": (_set([1], "attachments", 0), "attachments[0] is a list, not an object"),
    "link without pin": (_del("links", 0, "pin"), "links[0] has no pin"),
    "dummy without ifindex": (_del("dummy", "ifindex"), "dummy has no ifindex"),
    "service of two": (_set([6, "10.96.0.10"], "ipvs_services", 1),
                       "ipvs_services[1] is a list of 2, not of 3 (protocol, address, port)"),
    "draining port a string": (_set("80", "ipvs_draining", 0, 2),
                               "ipvs_draining[0][2] (port) is a string, not an integer"),
    "timeouts without value": (_del("ipvs_timeouts", "value"), "ipvs_timeouts has no value"),
    "timeouts without udp": (_del("ipvs_timeouts", "previous", "udp"),
                             "ipvs_timeouts.previous has no udp"),
    "sysctl without previous": (_del("sysctls", "net.ipv4.ip_forward", "previous"),
                                "sysctls['net.ipv4.ip_forward'] has no previous"),
    "sysctls a list": (_set([], "sysctls"), "sysctls is a list, not an object"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_bad_record_is_refused_naming_the_field(case: str, tmp_path: Path) -> None:
    damage, message = BAD_RECORDS[case]
    raw = copy.deepcopy(json.loads(OLD_STATE))
    damage(raw)
    text = json.dumps(raw, indent=2)
    with pytest.raises(ValueError) as refused:
        from_json_checked(text)
    assert str(refused.value) == message
    # as a state file: not used, and why (recovery.py then reads the journal)
    path = state_path(str(tmp_path), "root")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert load_checked(str(tmp_path), "root") == (
        None, f"{path} is not a bpfgen state file: {message}"
    )  # fmt: skip
