"""`bpfgen agent`: follow the cluster's Services and EndpointSlices, keep the node converged.

One watcher thread per kind (bpfgen/kube.py) lists, then watches from the list's
resourceVersion, and keeps its objects in the `Store`; a 410 Gone or the resync timer
lists again; a broken connection is retried with backoff. The main thread waits for a
change, lets a burst settle (`debounce`, at most `max_delay` after its first event),
writes the store as one manifest (`STATE/services.json`) and converges the node as
`bpfgen sync` does: compile (atomic: bad input leaves DIR as it was), then `up` the
first time and `sync` after, under the namespace's lock. Whatever fails, the node
keeps the last good state and the agent goes on: a bad object is reported and the
next change converges again; valid objects bpfgen does not serve are skipped by the
compile, one by one (docs/kube-proxy.md "Objects bpfgen does not serve").

Every convergence is one line on stderr, or one JSON object a line on stdout with
`--json`: what started it, how many objects, what was skipped, the time it took,
and the runtime's changes or the error.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from resource import RUSAGE_CHILDREN, getrusage
from typing import Any

from bpfgen.compiler import CompileResult, compile_build
from bpfgen.delta import Baseline, Fallback, Update, endpoints_changed, service_key
from bpfgen.errors import BpfgenError, InputError, NeedsNewCode
from bpfgen.inputs.source import read_input
from bpfgen.kube import PATHS, WATCH_SECONDS, ApiError, ApiSource, Gone
from bpfgen_runtime import Options, RuntimeOpError, sync, up
from bpfgen_runtime.node import locked
from bpfgen_runtime.pins import PinnedMap

#: The manifest the agent writes and compiles, in its state directory.
SERVICES_FILE = "services.json"
SERVICE, SLICE = "Service", "EndpointSlice"  # the kinds watched (kube.PATHS)


class Store:
    """The objects of each kind as last listed and watched, and a change counter."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self._cond = threading.Condition()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in kinds}
        self._listed: set[str] = set()
        self.version = 0  # bumped on every change
        self.converged = 0  # the version last handed to a convergence
        self.last_change = 0.0  # monotonic time of the last change
        self.first_change = 0.0  # of the first change not yet converged
        # What changed since the last take, for the fast path (bpfgen/delta.py): the
        # keys of each kind watched, or None after a list (everything may have changed)
        self._dirty: dict[str, set[tuple[str, str]]] | None = {k: set() for k in kinds}
        self._slices_of: dict[str, set[tuple[str, str]]] = {}  # Service key -> slice keys
        self._owners: set[str] = set()  # Services whose slices changed since the last take

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace", "default")), str(meta.get("name", ""))

    def replace(self, kind: str, objects: list[dict[str, Any]]) -> None:
        new = {self._key(o): o for o in objects}
        with self._cond:
            changed = new != self._objects[kind] or kind not in self._listed
            self._objects[kind] = new
            self._listed.add(kind)
            if kind == SLICE:
                self._slices_of = {}
                for key, o in new.items():
                    self._index(key, o)
            if changed:
                self._dirty = None
                self._changed()

    def _index(self, key: tuple[str, str], obj: dict[str, Any] | None) -> None:
        owner = service_key(obj) if obj is not None else None
        if owner is not None:
            self._slices_of.setdefault(owner, set()).add(key)

    def apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        with self._cond:
            objects = self._objects[kind]
            old = objects.get(key)
            if event_type == "DELETED":
                if objects.pop(key, None) is None:
                    return
            elif old == obj:
                return
            else:
                objects[key] = obj
            if kind == SLICE:
                self._unindex(key, old)
                if event_type != "DELETED":
                    self._index(key, obj)
                # a label moved: both Services; a slice of no Service: served by none
                self._owners.update(o for o in (service_key(old or {}), service_key(obj)) if o)
            if self._dirty is not None:
                self._dirty[kind].add(key)
            self._changed()

    def _unindex(self, key: tuple[str, str], old: dict[str, Any] | None) -> None:
        owner = service_key(old) if old is not None else None
        if owner is not None and owner in self._slices_of:
            self._slices_of[owner].discard(key)

    def _changed(self) -> None:
        now = time.monotonic()
        if self.version == self.converged:
            self.first_change = now
        self.version += 1
        self.last_change = now
        self._cond.notify_all()

    def ready(self) -> bool:
        return self._listed == set(self._objects)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait for `predicate`, in short waits (a signal handler runs between them)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take(self) -> tuple[int, list[dict[str, Any]]]:
        """The current version and its objects in a stable order (Services first)."""
        with self._cond:
            self.converged = self.version
            self._dirty = {k: set() for k in self._objects}
            self._owners = set()
            items = [o for kind in self._objects for _, o in sorted(self._objects[kind].items())]
            return self.version, items

    def take_endpoint_changes(self) -> tuple[int, float, dict[str, Any]] | None:
        """When only EndpointSlices changed since the last take: the current version, when
        the first of the changes arrived, and for each Service concerned (its object or
        None, its slices now). Else None and nothing taken (the full path takes all)."""
        with self._cond:
            dirty = self._dirty
            if dirty is None or any(keys for kind, keys in dirty.items() if kind != SLICE):
                return None
            slices = self._objects[SLICE]
            owners, self._owners = self._owners, set()
            self.converged = self.version
            self._dirty = {k: set() for k in self._objects}
            services = self._objects[SERVICE]
            changed = {}
            for owner in sorted(owners):
                namespace, name = owner.split("/", 1)
                changed[owner] = (
                    services.get((namespace, name)),
                    [slices[k] for k in sorted(self._slices_of.get(owner, ()))],
                )
            return self.version, self.first_change, changed


@dataclass
class Backoff:
    """Retry delays: 0.5 s doubling to `ceiling`, back to the start after a success."""

    ceiling: float = 30.0
    delay: float = 0.5
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.delay

    def next(self) -> float:
        wait, self._next = self._next, min(self._next * 2, self.ceiling)
        return wait

    def reset(self) -> None:
        self._next = self.delay


class Watcher(threading.Thread):
    """List, then watch, one kind into the store, until `stop` is set."""

    def __init__(
        self,
        source: ApiSource,
        store: Store,
        stop: threading.Event,
        resync: float,
        log: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(name=f"watch-{source.kind}", daemon=True)
        self.source, self.store, self.stop, self.resync, self.log = (
            source, store, stop, resync, log,
        )  # fmt: skip
        self.lists = 0  # how many times it listed (tests read it)

    def run(self) -> None:
        backoff = Backoff()
        kind = self.source.kind
        while not self.stop.is_set():
            try:
                items, rv = self.source.list()
                self.lists += 1
                self.store.replace(kind, items)
                backoff.reset()
                due = time.monotonic() + self.resync
                while not self.stop.is_set() and time.monotonic() < due:
                    seconds = int(min(WATCH_SECONDS, max(1.0, due - time.monotonic())))
                    for event in self.source.watch(rv, seconds):
                        rv = event.resource_version or rv
                        if event.type != "BOOKMARK":
                            self.store.apply(kind, event.type, event.object)
                        backoff.reset()
                        if self.stop.is_set():
                            return
                # The resync timer: list again, in case a watch missed anything.
            except Gone as exc:
                self.log({"event": "relist", "kind": kind, "reason": str(exc)})
            except Exception as exc:  # the API, the network, a closed client on stop, a bug
                if self.stop.is_set():
                    return
                wait = backoff.next()
                error = (
                    str(exc)
                    if isinstance(exc, (ApiError, OSError))
                    else (f"{type(exc).__name__}: {exc}")
                )  # say which, when it is not the API's
                self.log({"event": "api-error", "kind": kind, "error": error,
                          "retry_in": wait})  # fmt: skip
                self.stop.wait(wait)


@dataclass
class AgentConfig:
    node: Path
    build_dir: Path
    state_dir: Path
    opts: Options
    build: str | None = None
    debounce: float = 0.2  # quiet time that ends a burst
    max_delay: float = 2.0  # the longest a change waits for a burst to end
    resync: float = 600.0  # full relist of each kind
    once: bool = False  # converge once after the first lists, then exit
    # After endpoint changes written in place (the fast path), the full path runs once
    # the cluster has been quiet this long: the build directory catches up, and the
    # sync it runs checks that the maps already hold what the compile made.
    catchup: float = 10.0
    fast: bool = True  # endpoint changes in place when the build allows (bpfgen/delta.py)
    ready_timeout: float = 1e9  # how long the first lists may take (--once: 60 s)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        sources: list[ApiSource],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.config = config
        self.sources = sources
        self.emit = emit
        self.stop = threading.Event()
        self.store = Store(tuple(s.kind for s in sources))
        self.watchers = [Watcher(s, self.store, self.stop, config.resync, emit) for s in sources]
        self.is_up = False
        self.converges = 0
        self.failures = 0
        self.baseline: Baseline | None = None  # None: the next change takes the full path
        self.tables = LiveTables(config.opts.pin_dir())
        self.catchup_at: float | None = None  # when the build directory catches up
        self.updates = 0

    def shutdown(self) -> None:
        self.stop.set()
        self.store.wake()

    def run(self) -> int:
        """Converge on every change until stopped; 0, or 1 when `once` failed."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        for w in self.watchers:
            w.start()
        self.emit({"event": "start", "kinds": [s.kind for s in self.sources]})
        ready = self.store.wait(lambda: self.store.ready() or self.stop.is_set(),
                                self.config.ready_timeout)  # fmt: skip
        if not ready:
            self.emit(
                {
                    "event": "stop",
                    "error": "the API server listed nothing within "
                    f"{self.config.ready_timeout:g} s",
                    "converges": 0,
                    "failures": 1,
                }
            )
            self.stop.set()
            return 1
        ok, retry, backoff = True, False, Backoff()
        store = self.store
        while not self.stop.is_set():
            if retry:  # the node could not be converged (not the input): again, later
                self.stop.wait(backoff.next())
            else:
                store.wait(lambda: store.version != store.converged or self.stop.is_set()
                           or self._catchup_due(), 1e9)  # fmt: skip
            if self.stop.is_set():
                break
            why = "retry" if retry else "change" if self.converges else "start"
            if not retry and store.version == store.converged:
                why = "catch-up"  # _catchup_due
            elif not retry and self.baseline is not None:
                taken = store.take_endpoint_changes()
                if taken is not None and self.fast_update(*taken):
                    continue
                why = "fallback" if taken is not None else why
            if why != "catch-up":
                self._settle()
            ok, retry = self.converge(why)
            if ok:
                backoff.reset()
            if self.config.once:
                break
        self.tables.close()
        self.stop.set()
        self.emit({"event": "stop", "converges": self.converges, "failures": self.failures,
                   "updates": self.updates})  # fmt: skip
        return 0 if ok or not self.config.once else 1

    def _catchup_due(self) -> bool:
        return self.catchup_at is not None and time.monotonic() >= self.catchup_at

    def fast_update(self, version: int, first_change: float, changed: dict[str, Any]) -> bool:
        """Write the endpoint changes of `changed`'s Services into the live maps (the
        fast path); False when they need the full path (the record says why)."""
        assert self.baseline is not None
        start = time.monotonic()
        record: dict[str, Any] = {"event": "update", "version": version,
                                  "services": sorted(changed)}  # fmt: skip
        try:
            update = endpoints_changed(self.baseline, changed)
            with locked(self.config.opts, "agent"):
                self.tables.write(update)
        except Fallback as exc:
            record.update(ok=False, fallback=str(exc))
            self.emit(record)
            return False
        except (BpfgenError, RuntimeOpError, OSError) as exc:
            self.baseline = None  # the maps may be half written: the full path rewrites them
            record.update(ok=False, fallback=f"writing the maps failed: {exc}")
            self.emit(record)
            return False
        done = time.monotonic()
        self.updates += 1
        self.catchup_at = done + self.config.catchup
        maps = {name: len(e) for name, e in update.writes}
        maps |= {f"{name} removed": len(k) for name, k in update.removals}
        record.update(ok=True, entries=update.entries, frontends=len(update.frontends),
                      maps=maps, seconds=round(done - start, 6),
                      latency=round(done - first_change, 6))  # fmt: skip
        self.emit(record)
        return True

    def _settle(self) -> None:
        """Wait for a burst of changes to end: `debounce` without one, at most
        `max_delay` after the burst's first."""
        store, cfg = self.store, self.config
        while not self.stop.is_set():
            now = time.monotonic()
            quiet_at = store.last_change + cfg.debounce
            latest = store.first_change + cfg.max_delay
            if now >= quiet_at or now >= latest:
                return
            self.stop.wait(min(quiet_at, latest) - now)

    def converge(self, why: str) -> tuple[bool, bool]:
        """Compile the store and converge the node: (converged, worth retrying as is).

        The full path runs in a child process (`full_path`), forked for it: a compile
        at 10,000 Services allocates gigabytes for seconds (Maglev tables, map_init),
        which a resident process would keep as its own RSS; the child gives them back
        when it exits and sends the record and the fast path's baseline."""
        version, items = self.store.take()
        start = time.monotonic()
        self.tables.close()  # a sync may replace the tables: opened again after it
        self.baseline = None
        self.catchup_at = None
        gc.unfreeze()  # the last baseline is garbage now
        record, baseline = _in_child(full_path, self.config, items, self.is_up, why)
        record.update(version=version, seconds=round(time.monotonic() - start, 3))
        # the largest RSS of any convergence's process so far (Linux: KiB)
        record["child_max_rss_mib"] = round(getrusage(RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        if record["ok"]:
            self.is_up = True
        if baseline is not None:
            self.baseline = baseline
            # Millions of long-lived objects at 10,000 Services: out of the cyclic
            # collector's sight, or its full passes stall updates for tens of ms.
            gc.collect()
            gc.freeze()
        self.converges += 1
        self.failures += not record["ok"]
        self.emit(record)
        return bool(record["ok"]), bool(record.get("retry"))


def full_path(
    cfg: AgentConfig, items: list[dict[str, Any]], is_up: bool, why: str
) -> tuple[dict[str, Any], Baseline | None]:
    """Compile `items` and converge the node (`up` when not `is_up`, else `sync`): the
    convergence's record, and the fast path's baseline when it can take the next change.

    An object the compile finds malformed is rejected (left out, named in the record)
    and the rest compiled again: one bad object does not hold the node's other
    changes back. Problems elsewhere (the node file) fail the convergence."""
    services = cfg.state_dir / SERVICES_FILE
    rejected: list[dict[str, Any]] = []
    notices: list[str] = []

    def progress(message: str) -> None:
        if message.startswith("notice: "):
            notices.append(message.removeprefix("notice: "))

    record: dict[str, Any] = {"event": "converge", "why": why, "objects": len(items)}
    baseline = None
    try:
        with locked(cfg.opts, "agent"):
            while True:  # each round leaves out at least one object
                notices.clear()  # only the notices of the compile that goes through
                _write_list(services, items)
                try:
                    result = compile_build(cfg.node, [services], cfg.build_dir,
                                           build=cfg.build, progress=progress)  # fmt: skip
                    break
                except InputError as exc:
                    bad = _objects_at_fault(exc, services, len(items))
                    if bad is None:
                        raise  # not only objects' problems: nothing to leave out
                    rejected += [{"object": _label(items[i]), "problems": problems}
                                 for i, problems in sorted(bad.items())]  # fmt: skip
                    items = [o for i, o in enumerate(items) if i not in bad]
            report = (sync if is_up else up)(cfg.build_dir, cfg.opts)
        skipped = result.manifest.inputs.get("skipped", [])
        record.update(ok=True, result="ok", skipped=len(skipped), changes=report.changes,
                      config_sha256=result.manifest.config_sha256)  # fmt: skip
        if why == "catch-up":  # the maps had every entry the compile made: no drift
            record["drift"] = [c for c in report.changes if c.startswith("map bpfgen_svc_")]
        baseline, record["fast_path"] = _baseline(cfg, result)
    except InputError as exc:  # the next change may fix it; retrying cannot
        record.update(ok=False, result="bad-input",
                      error="bad input: the node keeps its last good state",
                      problems=[str(p) for p in exc.problems])  # fmt: skip
    except NeedsNewCode as exc:  # no clang here: only another change (or image) helps
        record.update(ok=False, result="needs-new-code", error=f"needs new code: {exc}")
    except (BpfgenError, RuntimeOpError, OSError) as exc:
        record.update(ok=False, result="error", error=str(exc), retry=True)
    record["notices"] = notices
    record["rejected"] = rejected
    return record, baseline


def _baseline(cfg: AgentConfig, result: CompileResult) -> tuple[Baseline | None, str]:
    """After a full convergence: what the fast path starts from, or why it is off."""
    if not cfg.fast:
        return None, "off (--no-fast-path)"
    if result.plan is None or result.inputs is None:
        return None, "after the next compile (this one came from the cache)"
    try:
        return Baseline.of(read_input(cfg.node), result.inputs, result.plan), "on"
    except Fallback as exc:
        return None, f"off: {exc}"


def _in_child(
    fn: Callable[..., tuple[dict[str, Any], Baseline | None]], *args: Any
) -> tuple[dict[str, Any], Baseline | None]:
    """fn(*args) in a forked child process; its result comes back pickled. A child that
    dies without one (killed, out of memory) is an error worth retrying."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(send, fn, args), name="bpfgen-converge")
    child.start()
    send.close()
    try:
        result: tuple[dict[str, Any], Baseline | None] = receive.recv()
    except EOFError:
        child.join()
        return _failed(f"the convergence process ended with status {child.exitcode} and "
                       "no result"), None  # fmt: skip
    finally:
        receive.close()
    child.join()
    return result


def _failed(error: str) -> dict[str, Any]:
    """The record of a convergence that ended with no result of its own: retried."""
    return {"event": "converge", "ok": False, "result": "error", "retry": True,
            "error": error, "notices": [], "rejected": []}  # fmt: skip


def _child_main(send: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent stops after this convergence
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = fn(*args)
    except BaseException as exc:  # a bug: reported as the convergence's error
        result = (_failed(f"{type(exc).__name__}: {exc}"), None)
    send.send(result)
    send.close()


class LiveTables:
    """The running programs' service tables, opened from their pins for the fast path."""

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir
        self.maps: dict[str, PinnedMap] = {}

    def write(self, update: Update) -> None:
        for name, entries in update.writes:
            live = self._map(name)
            for k, v in entries:
                live.update(k, v)
        for name, keys in update.removals:
            live = self._map(name)
            for k in keys:
                live.delete(k)

    def _map(self, name: str) -> PinnedMap:
        if name not in self.maps:
            self.maps[name] = PinnedMap(os.path.join(self.pin_dir, name))
        return self.maps[name]

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        self.maps.clear()


def _write_list(path: Path, items: list[dict[str, Any]]) -> None:
    """The objects as one `kind: List`, object i on line i + 2 (so that a problem's
    line names its object), sorted keys: equal objects are equal bytes."""
    body = ",\n".join(json.dumps(o, sort_keys=True) for o in items)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f'{{"apiVersion": "v1", "kind": "List", "items": [\n{body}\n]}}\n')
    os.replace(tmp, path)


def _objects_at_fault(exc: InputError, path: Path, count: int) -> dict[int, list[str]] | None:
    """Object index -> its problems, when every problem is one object's; else None."""
    bad: dict[int, list[str]] = {}
    for p in exc.problems:
        index = p.line - 2
        if Path(p.file) != path or not 0 <= index < count:
            return None
        bad.setdefault(index, []).append(str(p))
    return bad or None


def _label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}"


class Metrics:
    """The records, counted for Prometheus (`--metrics HOST:PORT`, GET /metrics)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.converges: dict[str, int] = {}  # by result
        self.relists: dict[str, int] = {}  # by kind
        self.api_errors: dict[str, int] = {}  # by kind
        self.updates: dict[str, int] = {}  # fast-path updates: written, or fell back
        self.gauges: dict[str, float] = {"in_sync": 0.0}

    def observe(self, record: dict[str, Any]) -> None:
        with self.lock:
            event = record["event"]
            if event == "converge":
                result = record["result"]
                self.converges[result] = self.converges.get(result, 0) + 1
                self.gauges["last_converge_seconds"] = record["seconds"]
                self.gauges["in_sync"] = 1.0 if record["ok"] else 0.0
                if record["ok"]:
                    self.gauges["last_success_timestamp_seconds"] = round(time.time(), 3)
                    self.gauges["objects"] = record["objects"] - len(record["rejected"])
                    self.gauges["skipped_objects"] = record["skipped"]
                    self.gauges["rejected_objects"] = len(record["rejected"])
            elif event == "update":
                result = "written" if record["ok"] else "fallback"
                self.updates[result] = self.updates.get(result, 0) + 1
                if record["ok"]:
                    self.gauges["last_update_latency_seconds"] = record["latency"]
            elif event == "relist":
                self.relists[record["kind"]] = self.relists.get(record["kind"], 0) + 1
            elif event == "api-error":
                self.api_errors[record["kind"]] = self.api_errors.get(record["kind"], 0) + 1

    def text(self) -> str:
        """The Prometheus text exposition format (0.0.4)."""
        with self.lock:
            out: list[str] = []

            def family(name: str, kind: str, doc: str, samples: dict[str, float],
                       label: str | None) -> None:  # fmt: skip
                out.append(f"# HELP bpfgen_agent_{name} {doc}")
                out.append(f"# TYPE bpfgen_agent_{name} {kind}")
                for key, value in sorted(samples.items()):
                    labels = f'{{{label}="{key}"}}' if label else ""
                    out.append(f"bpfgen_agent_{name}{labels} {value:g}")

            family("converges_total", "counter", "Convergences by result (ok, bad-input, "
                   "needs-new-code, error).", dict(self.converges), "result")  # fmt: skip
            family("updates_total", "counter", "Endpoint changes in place (the fast path): "
                   "written, or fallback to a convergence.", dict(self.updates),
                   "result")  # fmt: skip
            family("relists_total", "counter", "Lists again after 410 Gone, by kind.",
                   dict(self.relists), "kind")  # fmt: skip
            family("api_errors_total", "counter", "Failed API requests, by kind (retried).",
                   dict(self.api_errors), "kind")  # fmt: skip
            docs = {
                "in_sync": "1 when the last convergence succeeded: the node has the cluster's "
                "last state.",
                "last_converge_seconds": "Duration of the last convergence.",
                "last_update_latency_seconds": "From the arrival of the first change of "
                "the last update in place to its last map write.",
                "last_success_timestamp_seconds": "When the last convergence succeeded.",
                "objects": "Objects in the last good convergence.",
                "skipped_objects": "Objects or parts the last good convergence did not "
                "serve (status lists them).",
                "rejected_objects": "Malformed objects the last good convergence left out "
                "(its record names them).",
            }
            for name, value in sorted(self.gauges.items()):
                family(name, "gauge", docs[name], {"": value}, None)
            return "\n".join(out) + "\n"


def serve_metrics(metrics: Metrics, address: tuple[str, int]) -> tuple[str, int]:
    """Serve GET /metrics on `address` from a daemon thread; the address bound."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    host, port = server.server_address[:2]
    return str(host), int(port)


def printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
    """How records are shown: JSON lines on stdout, or one readable line on stderr."""
    lock = threading.Lock()

    def emit(record: dict[str, Any]) -> None:
        with lock:
            if as_json:
                print(json.dumps(record, sort_keys=True), flush=True)
                return
            stamp = time.strftime("%H:%M:%S")
            kind = record["event"]
            if kind == "converge" and record["ok"]:
                text = (f"converged ({record['why']}): {record['objects']} objects, "
                        f"{record['skipped']} skipped, {len(record['rejected'])} rejected, "
                        f"{len(record['changes'])} changes in {record['seconds']} s")  # fmt: skip
                for r in record["rejected"]:
                    text += f"\n  rejected {r['object']}:" + "".join(
                        f"\n    {p}" for p in r["problems"]
                    )
            elif kind == "converge":
                text = f"converge failed ({record['why']}): {record['error']}"
                text += "".join(f"\n  {p}" for p in record.get("problems", []))
            elif kind == "api-error":
                text = (f"{record['kind']}: {record['error']}; "
                        f"retry in {record['retry_in']} s")  # fmt: skip
            elif kind == "relist":
                text = f"{record['kind']}: {record['reason']}; listing again"
            elif kind == "metrics":
                text = f"metrics at {record['url']}"
            else:
                text = " ".join(f"{k}={v}" for k, v in record.items())
            print(f"[{stamp}] agent: {text}", file=sys.stderr, flush=True)
            for notice in record.get("notices", []) if not as_json else []:
                print(f"notice: {notice}", file=sys.stderr, flush=True)

    return emit


def run_agent(config: AgentConfig, kubeconfig: Path | None, context: str | None,
              as_json: bool, metrics_at: tuple[str, int] | None = None) -> int:  # fmt: skip
    """The CLI's entry: connect, watch both kinds, converge until SIGTERM/SIGINT."""
    from bpfgen.kube import connect

    http = connect(kubeconfig, context)
    show, metrics = printer(as_json), Metrics()

    def emit(record: dict[str, Any]) -> None:
        metrics.observe(record)
        show(record)

    agent = Agent(config, [ApiSource(http, kind) for kind in PATHS], emit)
    if metrics_at is not None:
        host, port = serve_metrics(metrics, metrics_at)
        emit({"event": "metrics", "url": f"http://{host}:{port}/metrics"})

    def stop(signum: int, frame: object) -> None:
        agent.shutdown()

    for sig in (signal.SIGTERM, signal.SIGINT):  # also when started with SIGINT ignored
        signal.signal(sig, stop)
    try:
        return agent.run()
    finally:
        agent.shutdown()
        http.close()
