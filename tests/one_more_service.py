"""One Service (and its EndpointSlice) to add to the example: default/late at
198.18.128.77, port 8080 -> one endpoint 198.19.1.77:80. Tests of what a change of
the Services does (a node without clang, the agent, stages) add it."""

from __future__ import annotations

from typing import Any

import yaml

LATE_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: late, namespace: default}
spec: {clusterIP: 198.18.128.77, clusterIPs: [198.18.128.77],
       ports: [{name: http, port: 8080, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: late-1, namespace: default, labels: {kubernetes.io/service-name: late}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints: [{addresses: [198.19.1.77], conditions: {ready: true}}]
"""


def late_objects(port: int = 8080, name: str = "late") -> list[dict[str, Any]]:
    """LATE_YAML's two objects, the Service's port and the names changed."""
    service, slice_ = yaml.safe_load_all(LATE_YAML)
    service["metadata"]["name"] = name
    service["spec"]["ports"][0]["port"] = port
    slice_["metadata"]["name"] = f"{name}-1"
    slice_["metadata"]["labels"]["kubernetes.io/service-name"] = name
    return [service, slice_]
