"""The node file as a JSON Schema (draft 2020-12), for editors and CI linters.

`bpfgen schema` prints it; with a YAML language server, a node file that starts with
`# yaml-language-server: $schema=<path to the printed file>` gets completion, hover
text and inline errors. The reader (node_file.py) stays the authority: it gives the
exact messages with file:line, and checks what a schema cannot say (a pod CIDR that
holds the node, SNAT ranges that overlap NodePorts, a prime Maglev size). The schema
is built from the reader's own tables (the keys of each section, which are required,
the defaults, the bounds and the value patterns), so the two cannot name different
fields; tests/unit/test_node_schema.py holds every node file of the repository valid
under it and the reader's refusals of shape refused by it too.
"""

from __future__ import annotations

from typing import Any

from bpfgen.inputs import node_file as nf
from bpfgen.inputs.fields import DNS_SUBDOMAIN, LABEL_VALUE
from bpfgen.model import Hook, Mode
from bpfgen_runtime.contract import BPF_SCHEDULERS, IPVS_SCHEDULERS

SCHEMA_ID = "https://bpfgen.invalid/schema/node-file/v1.json"
_IPV4 = r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$"  # noqa: E501
_CIDR = _IPV4[:-1] + r"/([0-9]|[12][0-9]|3[0-2])$"
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def _section(
    keys: tuple[str, ...], required: tuple[str, ...], properties: dict[str, Any], description: str
) -> dict[str, Any]:
    """An object with exactly the reader's keys (unknown keys are errors there too)."""
    assert set(properties) == set(keys), (sorted(properties), sorted(keys))
    out: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {k: properties[k] for k in keys},
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    return out


def _port_range(default: tuple[int, int], what: str) -> dict[str, Any]:
    return {
        "description": f'{what}: [min, max] or "min-max", inclusive',
        "default": list(default),
        "oneOf": [
            {"type": "array", "items": _PORT, "minItems": 2, "maxItems": 2},
            {"type": "string", "pattern": r"^[0-9]{1,6}-[0-9]{1,6}$"},
        ],
    }


def _duration(default: int) -> dict[str, Any]:
    return {
        "description": 'seconds, or a string of h/m/s parts ("90s", "5m", "2h4m")',
        "default": default,
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": nf._MAX_TIMEOUT},
            {"type": "string", "pattern": f"^{nf._DURATION.pattern}$"},
        ],
    }


def node_file_schema() -> dict[str, Any]:
    """The JSON Schema of a node file (apiVersion bpfgen/v1, kind NodeConfig)."""
    node = _section(
        nf._NODE,
        nf._NODE_REQUIRED,
        {
            "name": {
                "type": "string",
                "pattern": f"^{DNS_SUBDOMAIN.pattern}$",
                "description": "the Node's name (EndpointSlices' nodeName)",
            },
            "addresses": {
                "type": "array",
                "minItems": 1,
                "maxItems": nf._MAX_ADDRESSES,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": _IPV4},
                "description": "the node's IPv4 addresses: NodePorts, SNAT sources",
            },
            "podCIDR": {"type": "string", "pattern": _CIDR, "description": "this node's pods"},
            "zone": {
                "type": "string",
                "pattern": f"^{LABEL_VALUE.pattern}$",
                "description": "topology.kubernetes.io/zone, for EndpointSlice hints",
            },
        },
        "this node",
    )
    cluster = _section(
        nf._CLUSTER,
        nf._CLUSTER_REQUIRED,
        {
            "podCIDR": {"type": "string", "pattern": _CIDR, "description": "every pod"},
            "serviceCIDR": {"type": "string", "pattern": _CIDR, "description": "the ClusterIPs"},
            "masqueradeAll": {
                "type": "boolean",
                "default": False,
                "description": "kube-proxy's --masquerade-all (ClusterIPs)",
            },
            "nodePortRange": _port_range(nf._DEFAULT_NODE_PORT_RANGE, "the NodePorts"),
        },
        "cluster-wide facts",
    )
    interface = _section(
        nf._INTERFACE,
        ("name", "role"),
        {
            "name": {
                "type": "string",
                "minLength": 1,
                "description": "a device, or a glob ending in * (pod-facing devices)",
            },
            "role": {"enum": list(nf.INTERFACE_ROLES)},
            "hook": {
                "enum": [h.value for h in Hook],
                "default": Hook.TC.value,
                "description": "xdp only on the uplink",
            },
        },
        "an interface bpfgen attaches to",
    )
    datapath = _section(
        nf._DATAPATH,
        (),
        {
            "mode": {"enum": [m.value for m in Mode], "default": "ipvs"},
            "scheduler": {
                "enum": [str(s) for s in (*IPVS_SCHEDULERS, *BPF_SCHEDULERS)],
                "description": "an IPVS scheduler (ipvs mode) or maglev/random (bpf)",
            },
            "maglevTableSize": {
                "type": "integer",
                "minimum": 2,
                "maximum": 131071,
                "description": "a prime (the reader checks)",
            },
            "selectionSeed": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF},
            "socketLB": {"type": "boolean", "description": "bpf mode: the cgroup programs"},
            "cgroup": {"type": "string", "pattern": "^/", "description": "a cgroup v2 path"},
        },
        "how Service traffic is handled",
    )
    timeouts = _section(
        nf._TIMEOUTS,
        (),
        {key: _duration(default) for key, default in nf._DEFAULT_TIMEOUTS.items()},
        "session timeouts",
    )
    snat = _section(
        nf._SNAT,
        (),
        {
            "portRange": _port_range(nf._DEFAULT_SNAT_PORT_RANGE, "the SNAT source ports"),
            "maxSessions": {"type": "integer", "minimum": 1, "maximum": nf._MAX_SESSIONS},
            "timeouts": timeouts,
            "mark": {
                "description": "the skb->mark bit ingress sets for egress (a power of two)",
                "default": nf._DEFAULT_MARK,
                "oneOf": [
                    {"type": "integer", "minimum": 1, "maximum": 0xFFFFFFFF},
                    {"type": "string", "pattern": f"^({nf._MARK.pattern})$"},
                ],
            },
        },
        "source NAT",
    )
    features = _section(
        nf._FEATURES,
        (),
        {
            "icmpEcho": {
                "type": "boolean",
                "default": False,
                "description": "answer echo requests to VIPs",
            },
        },
        "optional datapath features",
    )
    top = _section(
        nf._TOP,
        nf._TOP_REQUIRED,
        {
            "apiVersion": {"const": "bpfgen/v1"},
            "kind": {"const": "NodeConfig"},
            "node": node,
            "cluster": cluster,
            "interfaces": {
                "type": "array",
                "minItems": 1,
                "items": interface,
                "description": "exactly one with role uplink",
            },
            "datapath": datapath,
            "snat": snat,
            "features": features,
        },
        "a bpfgen node file",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "bpfgen node file (bpfgen/v1 NodeConfig)",
        **top,
    }
