"""Run-stage updates: an EndpointSlice change turned into map writes, without a compile.

The agent's fast path (docs/agent.md, "Endpoint changes"). A build whose C does not
depend on the Services (image, frozen and generic builds of the bpf mode: frontends,
backends and Maglev tables in maps) serves a change of endpoints with the code it
has; only map entries change. `Baseline` is what the last full compile planned (the
validated Services and their frontends); `endpoints_changed` takes the objects of the
Services whose slices changed, validates them as `compile` does (bpfgen/inputs, on
just those objects), recomputes what endpoints decide of each of their frontends
(backends, draining members, masquerade or drop) while keeping what the Service
spec decides (frontend keys and ids, affinity ids, pod twins), and returns the map
entries that differ from the baseline's, in the order a live program may see them
written (converge.map_init's order: tables first, the frontend entry last).

Anything else falls back to the full path (compile, then sync), with the reason:
a Service added, removed or changed; a value compiled into the C that the change
would alter (the backend tables' size); bad input. The property
test tests/unit/test_delta.py checks the promise this module makes: for any config
and any endpoint change it accepts, the full compile renders the same C, and its
map_init equals the baseline's with the update applied.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bpfgen import maglev
from bpfgen.errors import InputError
from bpfgen.inputs import load_sources
from bpfgen.inputs.source import Source
from bpfgen.model import Backend, Inputs, Mode, Service
from bpfgen.plan.bpf import (
    MAGLEV_TABLE_SEED,
    backend_entries,
    backends_max_for,
    member_entries,
    svc_frontend_entry,
)
from bpfgen.plan.ir import Frontend, FrontendKind, Plan
from bpfgen.plan.shared import frontends_of
from bpfgen_runtime.contract import BuildKind

#: The maps a run-stage update writes (templates/include/bpfgen_maps.h). The frontend
#: table is written last and cleaned first (see `Update`).
FRONTENDS = "bpfgen_svc_frontends"
MEMBERS = "bpfgen_svc_members"
BACKENDS = "bpfgen_svc_backends"
MAGLEV = "bpfgen_svc_maglev"


class Fallback(Exception):
    """This change needs the full path (compile, then sync); the message says why."""


@dataclass
class Baseline:
    """What the last full compile planned, kept by the agent between compiles."""

    node_source: Source  # the node file as read, for validating single Services
    inputs: Inputs
    frontends: list[Frontend]  # position == frontend id
    by_service: dict[str, list[int]]  # Service key -> its frontends' ids
    services: dict[str, Service]
    total_members: int
    backends_max: int
    maglev_size: int | None  # None: no bpfgen_svc_maglev map

    @classmethod
    def of(cls, node_source: Source, inputs: Inputs, plan: Plan) -> Baseline:
        """Raises Fallback when no endpoint change can skip the compile for this build."""
        if plan.mode is not Mode.BPF:
            raise Fallback("the ipvs mode: endpoints are IPVS real servers (sync)")
        if plan.build is BuildKind.SPECIALIZED:
            raise Fallback("a specialized build: endpoints are compiled into the C")
        assert plan.svc is not None and plan.frontends_in_map
        values = {d.name: d.value for d in plan.decisions}
        by_service: dict[str, list[int]] = {}
        for f in plan.frontends:
            by_service.setdefault(f.service, []).append(f.index)
        return cls(
            node_source=node_source,
            inputs=inputs,
            frontends=list(plan.frontends),
            by_service=by_service,
            services={s.key: s for s in inputs.services},
            total_members=sum(len(f.members) for f in plan.frontends),
            backends_max=int(values["BPFGEN_SVC_BACKENDS_MAX"]),
            maglev_size=plan.svc.maglev_size
            if plan.svc.maglev and not plan.svc.maglev_in_rodata
            else None,
        )


@dataclass
class Update:
    """Map entries to write and to remove, in order: `writes` map by map with the
    frontend table last (what a frontend entry points at exists before it does), then
    `removals`, after the frontend entries stopped pointing at them. An array map's
    entry is never removed: a removal there is a write of zeros."""

    services: list[str]
    writes: list[tuple[str, list[tuple[bytes, bytes]]]] = field(default_factory=list)
    removals: list[tuple[str, list[bytes]]] = field(default_factory=list)
    frontends: list[Frontend] = field(default_factory=list)  # the changed ones, new

    @property
    def entries(self) -> int:
        return sum(len(e) for _, e in self.writes) + sum(len(k) for _, k in self.removals)


def service_key(obj: Mapping[str, Any]) -> str | None:
    """The namespace/name of the Service an EndpointSlice belongs to (its label)."""
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get("kubernetes.io/service-name")
    return f"{meta.get('namespace', 'default')}/{name}" if isinstance(name, str) else None


def endpoints_changed(
    base: Baseline, changed: Mapping[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]]
) -> Update:
    """The update for Services whose EndpointSlices changed (only those): key ->
    (the Service object or None, all its slices now). Applies it to `base`."""
    update = Update(services=sorted(changed))
    writes: dict[str, dict[bytes, bytes]] = {MEMBERS: {}, BACKENDS: {}, MAGLEV: {}, FRONTENDS: {}}
    # A frontend entry is never removed here (a Service change takes the full path).
    removals: dict[str, list[bytes]] = {BACKENDS: [], MEMBERS: []}
    new_frontends: list[Frontend] = []
    new_services: dict[str, Service] = {}
    rows: dict[tuple[Backend, ...], bytes] = {}
    validated = _validated(base, changed)
    for key in update.services:
        old_ids = base.by_service.get(key, [])
        fresh = validated.get(key)
        if fresh is None:
            if old_ids:
                raise Fallback(f"Service {key}: no longer served")
            continue  # not served before, not now (skipped, or no Service object)
        old_svc = base.services.get(key)
        if old_svc is None:
            raise Fallback(f"Service {key}: not in the last build")
        svc = new_services[key] = _grafted(old_svc, fresh)
        mine = frontends_of(dataclasses.replace(base.inputs, services=(svc,)))
        if len(mine) != len(old_ids):
            raise Fallback(f"Service {key}: its frontends changed")
        for f, i in zip(mine, old_ids, strict=True):
            old = base.frontends[i]
            if _spec_of(f) != _spec_of(old):
                raise Fallback(f"Service {key}: its frontends changed")
            new = dataclasses.replace(
                old, backends=f.backends, draining=f.draining, masq=f.masq,
                masq_reason=f.masq_reason,
            )  # fmt: skip
            if new == old:
                continue
            new_frontends.append(new)
            _diff(writes[MEMBERS], removals[MEMBERS], member_entries(old), member_entries(new))
            _diff(writes[BACKENDS], removals[BACKENDS], backend_entries(old),
                  backend_entries(new))  # fmt: skip
            if base.maglev_size is not None and old.backends != new.backends:
                row_key = new.index.to_bytes(4, "little")
                if new.backends:
                    if new.backends not in rows:
                        rows[new.backends] = maglev.table_bytes(
                            [maglev.Backend.of(b) for b in new.backends],
                            base.maglev_size, seed=MAGLEV_TABLE_SEED,
                        )  # fmt: skip
                    writes[MAGLEV][row_key] = rows[new.backends]
                else:  # the full plan has no row for a frontend without backends: zeros
                    writes[MAGLEV][row_key] = bytes(2 * base.maglev_size)
            k, v = svc_frontend_entry(new)
            if v != svc_frontend_entry(old)[1]:
                writes[FRONTENDS][k] = v
    _check_code_unchanged(base, new_frontends)
    update.writes = [(m, list(e.items())) for m, e in writes.items() if e]
    update.removals = [(m, keys) for m, keys in removals.items() if keys]
    update.frontends = new_frontends
    _apply(base, update)
    base.services.update(new_services)
    return update


def _validated(
    base: Baseline, changed: Mapping[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]]
) -> dict[str, Service]:
    """The Services as `compile` validates them, from their own objects only, read at once
    (one parse of the node file); a Service with no object, or skipped, is not in it.
    Raises Fallback on bad input: the full path reports it (and names the object)."""
    items = [o for service, slices in changed.values() if service is not None
             for o in (service, *slices)]  # fmt: skip
    if not items:
        return {}
    data = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    try:
        inputs = load_sources([base.node_source, Source("(agent: changed objects)", data.encode())])
    except InputError as exc:
        raise Fallback(f"bad input ({exc.problems[0]})") from exc
    return {s.key: s for s in inputs.services if s.key in changed}


def _grafted(old: Service, fresh: Service) -> Service:
    """`old` with the endpoints of `fresh`: what the slices decide is taken from the new
    objects, what the spec and the other Services decide (shadowed addresses) is kept."""
    if dataclasses.replace(fresh, source=old.source, ports=old.ports) != old or [
        (p.name, p.protocol, p.port, p.node_port) for p in fresh.ports
    ] != [(p.name, p.protocol, p.port, p.node_port) for p in old.ports]:
        raise Fallback(f"Service {old.key}: its spec changed")
    ports = tuple(
        dataclasses.replace(
            o, backends=n.backends, draining=n.draining,
            serving_terminating=n.serving_terminating, zone_backends=n.zone_backends,
        )
        for o, n in zip(old.ports, fresh.ports, strict=True)
    )  # fmt: skip
    return dataclasses.replace(old, ports=ports)


def _spec_of(f: Frontend) -> tuple[object, ...]:
    """What the Service spec decides of a frontend (a hidden frontend's address is its
    place among all the Services' hidden frontends: not compared)."""
    addr = None if f.kind is FrontendKind.POD_SHORTCUT else f.addr
    return (f.kind, f.service, f.port_name, addr, f.port, f.protocol, f.affinity_timeout)


def _diff(
    writes: dict[bytes, bytes],
    removals: list[bytes],
    old: Iterable[tuple[bytes, bytes]],
    new: Iterable[tuple[bytes, bytes]],
) -> None:
    have = dict(old)
    want = dict(new)
    writes.update((k, v) for k, v in want.items() if have.get(k) != v)
    removals.extend(k for k in have if k not in want)


def _check_code_unchanged(base: Baseline, new: list[Frontend]) -> None:
    """The one value the bpf plan compiles in that endpoints decide in a build with
    frontends in maps (plan/bpf.py): the size of the backend tables."""
    members = base.total_members
    for f in new:
        members += len(f.members) - len(base.frontends[f.index].members)
    if backends_max_for(members) != base.backends_max:
        raise Fallback(
            f"{members} backend members resize bpfgen_svc_backends "
            f"({base.backends_max} -> {backends_max_for(members)} entries): new code"
        )


def _apply(base: Baseline, update: Update) -> None:
    for f in update.frontends:
        old = base.frontends[f.index]
        base.total_members += len(f.members) - len(old.members)
        base.frontends[f.index] = f
