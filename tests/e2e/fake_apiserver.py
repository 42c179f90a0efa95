"""A Kubernetes API server for the agent's tests: Services and EndpointSlices only.

It speaks the protocol the agent relies on, as the real one does: lists with a
resourceVersion, pages (limit/continue) and label selectors of the form
`!label,!label`; watches from a resourceVersion, as JSON lines, with bookmarks when
asked, ended after timeoutSeconds; 410 Gone (an ERROR event) for a version older
than the last compaction. The test drives it: `put`, `delete`, `compact`,
`freeze` (watches deliver nothing), `drop_watches` (every open watch is cut),
`fail` (the next requests get 503). It listens on 127.0.0.1 only: a socket, no
address, route or program anywhere.
"""

from __future__ import annotations

import bisect
import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATHS = {
    "/api/v1/services": "Service",
    "/apis/discovery.k8s.io/v1/endpointslices": "EndpointSlice",
}
API_VERSIONS = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1"}


class FakeApiServer:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            k: {} for k in API_VERSIONS
        }
        self.log: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, kind, type, object)
        self.compacted = 0  # watches from below this version get 410
        self.frozen = False
        self.generation = 0  # drop_watches bumps it: older watches end
        self.failing = 0
        self.requests: list[str] = []  # "list Service", "watch Service from 1003", ...
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server's
        return f"http://{host}:{port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "agent", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "agent"}}],
        }))  # fmt: skip
        return path

    # -- what the test does

    def put(self, obj: dict[str, Any]) -> int:
        kind = obj["kind"]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (meta["namespace"], meta["name"])
        with self.cond:
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            kind_objects = self.objects[kind]
            event = "MODIFIED" if key in kind_objects else "ADDED"
            kind_objects[key] = obj
            self.log.append((self.rv, kind, event, obj))
            self.cond.notify_all()
            return self.rv

    def delete(self, kind: str, namespace: str, name: str) -> int:
        with self.cond:
            obj = self.objects[kind].pop((namespace, name))
            self.rv += 1
            obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self.rv)))
            self.log.append((self.rv, kind, "DELETED", obj))
            self.cond.notify_all()
            return self.rv

    def compact(self) -> None:
        with self.cond:
            self.compacted = self.rv + 1
            self.log.clear()

    def freeze(self, frozen: bool = True) -> None:
        with self.cond:
            self.frozen = frozen
            self.cond.notify_all()

    def drop_watches(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def fail(self, count: int) -> None:
        with self.cond:
            self.failing = count

    # -- what the handler asks

    def take_failure(self) -> bool:
        with self.cond:
            if self.failing:
                self.failing -= 1
                return True
            return False

    def listing(self, kind: str, selector: str) -> tuple[list[dict[str, Any]], int]:
        with self.cond:
            items = [o for _, o in sorted(self.objects[kind].items()) if _selected(o, selector)]
            return copy.deepcopy(items), self.rv


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        assert term.startswith("!"), f"the fake serves only DoesNotExist terms: {term}"
        if term[1:] in labels:
            return False
    return True


def _handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request a connection; a watch ends with it

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            kind = PATHS.get(url.path)
            if kind is None:
                return self._status(404, f"{url.path} not found")
            if self.headers.get("Authorization") != "Bearer t0ken":
                return self._status(401, "Unauthorized")
            if api.take_failure():
                return self._status(503, "the fake is failing on purpose")
            selector = query.get("labelSelector", "")
            if query.get("watch") == "true":
                api.requests.append(f"watch {kind} from {query.get('resourceVersion')}")
                return self._watch(kind, selector, query)
            api.requests.append(f"list {kind}")
            items, rv = api.listing(kind, selector)
            start = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0) or len(items)
            page = items[start : start + limit]
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            # A list's items carry no kind or apiVersion, as the API server's do not.
            for item in page:
                item.pop("kind", None)
                item.pop("apiVersion", None)
            self._json(200, {"kind": f"{kind}List", "apiVersion": API_VERSIONS[kind],
                             "metadata": meta, "items": page})  # fmt: skip

        def _watch(self, kind: str, selector: str, query: dict[str, str]) -> None:
            since = int(query.get("resourceVersion") or 0)
            ends = time.monotonic() + float(query.get("timeoutSeconds") or 300)
            bookmarks = query.get("allowWatchBookmarks") == "true"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if since < api.compacted:
                expired = {"kind": "Status", "code": 410, "reason": "Expired",
                           "message": "too old resource version"}  # fmt: skip
                self._line({"type": "ERROR", "object": expired})
                return
            with api.cond:
                generation = api.generation
            sent, next_bookmark = since, time.monotonic() + 1.0
            while True:
                with api.cond:
                    api.cond.wait(0.2)
                    if api.generation != generation or time.monotonic() >= ends:
                        return
                    # the log is in version order: start after `sent` (a benchmark's log
                    # holds 20,000 objects; a scan would cost ms per wakeup)
                    first = bisect.bisect_right(api.log, sent, key=lambda e: e[0])
                    events = [] if api.frozen else [
                        (rv, t, o) for rv, k, t, o in api.log[first:] if k == kind
                    ]  # fmt: skip
                    latest = api.rv
                try:
                    for rv, event_type, obj in events:
                        sent = rv
                        if _selected(obj, selector):
                            self._line({"type": event_type, "object": obj})
                    if bookmarks and time.monotonic() >= next_bookmark and not api.frozen:
                        sent = max(sent, latest)
                        self._line({"type": "BOOKMARK", "object": {
                            "kind": kind, "apiVersion": API_VERSIONS[kind],
                            "metadata": {"resourceVersion": str(sent)}}})  # fmt: skip
                        next_bookmark = time.monotonic() + 1.0
                except OSError:
                    return  # the client went away

        def _line(self, event: dict[str, Any]) -> None:
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()

        def _status(self, code: int, message: str) -> None:
            self._json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "code": code, "message": message})  # fmt: skip

        def _json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
