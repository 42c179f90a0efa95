"""The Kubernetes API, read as kube-proxy reads it: list, then watch from the list.

`ApiSource` lists one kind (all namespaces, in pages) and watches it from the list's
resourceVersion, with bookmarks, handing back the objects as the API server wrote
them (plain JSON dicts: bpfgen's own reader, bpfgen/inputs, validates them as it
validates a file). lightkube gives the connection: kubeconfig or the in-cluster
service account, TLS, tokens and exec credential plugins. Its typed watch does not
fit here: on 410 Gone it restarts the watch from "now", silently losing what
happened in between, where a proxy must list again; and it asks for no bookmarks.

Errors: `Gone` (410: the resourceVersion is too old; list again), `ApiUnreachable`
(connection refused, reset, timed out, or a 5xx/429: retry with backoff), `ApiRefused`
(any other HTTP error, e.g. 401/403: retrying the same request cannot help).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

#: The kinds bpfgen follows, by their list path (all namespaces).
PATHS = {
    "Service": "/api/v1/services",
    "EndpointSlice": "/apis/discovery.k8s.io/v1/endpointslices",
}
API_VERSIONS = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1"}
#: kube-proxy's informers' selector (cmd/kube-proxy): not another proxy's objects, not
#: headless Services' slices. bpfgen/inputs skips such objects too, should one arrive.
PROXY_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
_PAGE = 500


class ApiError(Exception):
    pass


class Gone(ApiError):
    """410: the resourceVersion watched from is older than the server keeps."""


class ApiUnreachable(ApiError):
    """The request did not reach a healthy API server: retry later."""


class ApiRefused(ApiError):
    """The API server answered with an error retrying will not fix (401, 403, 404...)."""


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]

    @property
    def resource_version(self) -> str | None:
        meta = self.object.get("metadata") or {}
        rv = meta.get("resourceVersion")
        return rv if isinstance(rv, str) else None


def connect(kubeconfig: Path | None = None, context: str | None = None) -> httpx.Client:
    """An HTTP client to the API server: `kubeconfig` (its `context`), else lightkube's
    order: the in-cluster service account, $KUBECONFIG, ~/.kube/config."""
    from lightkube.config.client_adapter import Client
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.core.exceptions import ConfigError

    try:
        # lightkube 0.15 has no annotations on these two.
        config = (
            KubeConfig.from_file(kubeconfig)  # type: ignore[no-untyped-call]
            if kubeconfig
            else KubeConfig.from_env()  # type: ignore[no-untyped-call]
        )
        single = config.get(context)
    except ConfigError as exc:
        raise ApiRefused(f"kubeconfig: {exc}") from exc
    except OSError as exc:
        raise ApiRefused(f"kubeconfig: {exc.strerror or exc}: {exc.filename}") from exc
    if single is None:
        raise ApiRefused(f"kubeconfig: no context {context!r}" if context else "kubeconfig: "
                         "no current context")  # fmt: skip
    # The read timeout bounds a silent connection: a watch hears at least a bookmark
    # within the server's timeoutSeconds (below), so silence past it is a dead link.
    return Client(single, timeout=httpx.Timeout(10, read=WATCH_SECONDS + 30))


#: How long one watch request lasts (the server ends it; the watch is then renewed).
WATCH_SECONDS = 300


class ApiSource:
    """List and watch one kind, objects as JSON dicts."""

    def __init__(self, http: httpx.Client, kind: str, selector: str = PROXY_SELECTOR) -> None:
        self.http = http
        self.kind = kind
        self.path = PATHS[kind]
        self.selector = selector

    def list(self) -> tuple[list[dict[str, Any]], str]:
        """Every object and the list's resourceVersion, page by page (limit/continue)."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"labelSelector": self.selector, "limit": str(_PAGE)}
        while True:
            body = self._get_json(params)
            meta = body.get("metadata") or {}
            for item in body.get("items") or []:
                # Items of a list carry no kind/apiVersion; a watch event's object does.
                items.append({"apiVersion": API_VERSIONS[self.kind], "kind": self.kind, **item})
            token = meta.get("continue")
            if not token:
                rv = meta.get("resourceVersion")
                if not isinstance(rv, str) or not rv:
                    raise ApiRefused(f"list {self.path}: no resourceVersion in the answer")
                return items, rv
            params["continue"] = token

    def watch(self, resource_version: str, seconds: int = WATCH_SECONDS) -> Iterator[Event]:
        """Events after `resource_version`, until the server ends the request (after
        about `seconds`). Raises Gone on 410, as an HTTP status or as an ERROR event."""
        params = {
            "labelSelector": self.selector,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        try:
            with self.http.stream("GET", self.path, params=params) as response:
                self._check(response, read=True)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        self._raise_status(obj.get("code"), obj.get("message", ""))
                    if kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                        yield Event(kind, obj)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"watch {self.path}: {exc or type(exc).__name__}") from exc
        except json.JSONDecodeError as exc:
            raise ApiUnreachable(f"watch {self.path}: a line that is not JSON: {exc}") from exc

    def _get_json(self, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = self.http.get(self.path, params=params)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"list {self.path}: {exc or type(exc).__name__}") from exc
        self._check(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiUnreachable(f"list {self.path}: an answer that is not JSON") from exc
        if not isinstance(body, dict):
            raise ApiUnreachable(f"list {self.path}: an answer that is not an object")
        return body

    def _check(self, response: httpx.Response, read: bool = False) -> None:
        if response.status_code < 400:
            return
        if read:
            response.read()
        message = ""
        try:
            message = str(response.json().get("message", ""))
        except (ValueError, AttributeError):
            message = response.text[:200]
        self._raise_status(response.status_code, message)

    def _raise_status(self, code: object, message: str) -> None:
        what = f"{self.path}: {code} {message}".rstrip()
        if code == 410:
            raise Gone(what)
        if isinstance(code, int) and (code >= 500 or code == 429):
            raise ApiUnreachable(what)
        raise ApiRefused(what)
