"""Reading typed fields out of a source tree, every problem with its file, line and path.

`Run` keeps the problems and notices of one run per input file; `Scope` reads
one value (a mapping, a port, a CIDR, a name matching a pattern...) and reports
`file:line: path: message` when it is not what it must be. The node file and the
manifests are both read through it, so a kind of value fails with the same words
wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from bpfgen.errors import Problem
from bpfgen.inputs.source import Map, Node, Scalar, Seq
from bpfgen.model import Skipped

# Names. Each pattern is the whole alphabet the model lets through.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
#: A Kubernetes label value (a zone name: topology.kubernetes.io/zone).
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_CIDR = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}")
_PORT_RANGE = re.compile(r"([0-9]{1,6})-([0-9]{1,6})")

_LABEL_RULE = "at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit"
_SUBDOMAIN_RULE = (
    "at most 253 of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit"
)


class Run:
    """Problems, notices and skipped objects of one run, kept per input file.

    `strict`: what bpfgen does not serve (`Scope.unsupported`) is a problem, not a
    skip (`compile --strict`, for CI that wants every object served).
    """

    def __init__(self, files: list[str], strict: bool = False) -> None:
        self.files = files
        self.strict = strict
        self.problems: list[list[Problem]] = [[] for _ in files]
        self.notices: list[list[tuple[int, str]]] = [[] for _ in files]
        self.skipped: list[list[Skipped]] = [[] for _ in files]

    def problem(self, index: int, line: int, path: str, message: str) -> None:
        self.problems[index].append(Problem(self.files[index], line, path, message))

    def notice(self, index: int, line: int, message: str) -> None:
        self.notices[index].append((line, f"{self.files[index]}:{line}: {message}"))

    def skip(self, index: int, line: int, what: str, part: str, reason: str,
             unsupported: bool) -> None:  # fmt: skip
        """Record `what` (or its `part`) as not served, with a notice saying why."""
        self.skipped[index].append(
            Skipped(f"{self.files[index]}:{line}", what, part, reason, unsupported)
        )
        self.notice(index, line, f"{what}: {part}: {reason}" if part else f"{what}: {reason}")

    def sorted_skipped(self) -> tuple[Skipped, ...]:
        def line(s: Skipped) -> int:
            return int(s.source.rsplit(":", 1)[1])

        return tuple(s for ss in self.skipped for s in sorted(ss, key=line))

    def has_problems(self) -> bool:
        return any(self.problems)

    def sorted_problems(self) -> list[Problem]:
        # Stable: problems on one line keep the order they were found in.
        return [p for ps in self.problems for p in sorted(ps, key=lambda p: p.line)]

    def sorted_notices(self) -> tuple[str, ...]:
        return tuple(text for ns in self.notices for _, text in sorted(ns, key=lambda n: n[0]))


@dataclass
class Scope:
    """Reports problems in one file under a path prefix (`Service default/web`).

    `failed` says whether this scope reported anything: an object with a
    problem contributes nothing to the model (its problems are the answer).
    """

    run: Run
    index: int  # which input file
    prefix: str = ""
    failed: bool = False
    dropped: bool = False  # the whole object is skipped (`unsupported(whole=True)`)

    @property
    def file(self) -> str:
        return self.run.files[self.index]

    def error(self, line: int, path: str, message: str) -> None:
        full = f"{self.prefix}: {path}" if self.prefix and path else (self.prefix or path)
        self.failed = True
        self.run.problem(self.index, line, full, message)

    def notice(self, line: int, message: str) -> None:
        self.run.notice(self.index, line, message)

    def unsupported(
        self, line: int, path: str, problem: str, reason: str, whole: bool = False
    ) -> None:
        """Valid Kubernetes that bpfgen does not serve: `path` of this scope's object
        (the whole object when `whole`) is skipped with a notice giving `reason`; under
        `--strict` it is the problem `problem` instead."""
        if self.run.strict:
            self.error(line, path, problem)
        else:
            self.dropped = self.dropped or whole
            self.run.skip(self.index, line, self.prefix, path, reason, True)

    def not_ours(self, line: int, reason: str) -> None:
        """An object that no Service proxy serves (ExternalName, headless, another
        proxy's): skipped with a notice, also under `--strict`."""
        self.dropped = True
        self.run.skip(self.index, line, self.prefix, "", reason, False)

    def under(self, prefix: str) -> Scope:
        return Scope(self.run, self.index, prefix)

    # -- structure

    def mapping(
        self,
        node: Node,
        path: str,
        allowed: Sequence[str] | None = None,
        required: Iterable[str] = (),
    ) -> dict[str, Node] | None:
        """The fields of a mapping, null values dropped (absent = default).

        With `allowed`, other keys are errors (the node file); without, they
        are ignored (Kubernetes objects carry much that bpfgen does not read).
        """
        if not isinstance(node, Map):
            self.error(node.line, path, f"{describe(node)} is not a mapping")
            return None
        for key, line, first in node.duplicates:
            self.error(line, path, f"duplicate key {quote(key)} (first at line {first})")
        fields: dict[str, Node] = {}
        for key, value in node.fields.items():
            if allowed is not None and key not in allowed:
                expected = ", ".join(sorted(allowed))
                self.error(
                    node.key_lines[key],
                    path,
                    f"unknown field {quote(key)} (expected one of: {expected})",
                )
            elif not (isinstance(value, Scalar) and value.value is None):
                fields[key] = value
        for key in required:
            if key not in fields:
                if key in node.fields:
                    self.error(node.key_lines[key], _join(path, key), "is null (required)")
                else:
                    self.error(node.line, path, f"missing required field {quote(key)}")
        return fields

    def sequence(self, node: Node, path: str) -> tuple[Node, ...] | None:
        if not isinstance(node, Seq):
            self.error(node.line, path, f"{describe(node)} is not a list")
            return None
        return node.items

    # -- scalars

    def string(self, node: Node, path: str) -> str | None:
        if isinstance(node, Scalar) and isinstance(node.value, str):
            return node.value
        self.error(node.line, path, f"{describe(node)} is not a string")
        return None

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return node.value
        self.error(node.line, path, f"{describe(node)} is not a boolean (true or false)")
        return None

    def integer(self, node: Node, path: str, low: int, high: int) -> int | None:
        value = int_value(node)
        if value is None:
            self.error(node.line, path, f"{describe(node)} is not an integer")
        elif not low <= value <= high:
            self.error(node.line, path, f"{value} is out of range ({low}-{high})")
        else:
            return value
        return None

    def port(self, node: Node, path: str) -> int | None:
        value = int_value(node)
        if value is None or not 1 <= value <= 65535:
            self.error(node.line, path, f"{describe(node)} is not a port (1-65535)")
            return None
        return value

    def choice(self, node: Node, path: str, options: Sequence[str], what: str) -> str | None:
        if isinstance(node, Scalar) and isinstance(node.value, str) and node.value in options:
            return node.value
        self.error(node.line, path, f"{describe(node)} is not {what} ({', '.join(options)})")
        return None

    def name(
        self, node: Node, path: str, pattern: re.Pattern[str], what: str, empty: bool = False
    ) -> str | None:
        """A name matching `pattern` (or "" when `empty` allows it)."""
        value = self.string(node, path)
        if value is None:
            return None
        if (pattern.fullmatch(value) and len(value) <= 253) or (empty and value == ""):
            return value
        kind, rule = (
            ("a DNS-1123 label", _LABEL_RULE)
            if pattern is DNS_LABEL
            else ("a DNS-1123 subdomain", _SUBDOMAIN_RULE)
        )
        detail = rule if what == kind else f"{kind}: {rule}"
        self.error(node.line, path, f"{describe(node)} is not {what} ({detail})")
        return None

    def label_value(self, node: Node, path: str) -> str | None:
        """A Kubernetes label value, non-empty (e.g. a zone name)."""
        value = self.string(node, path)
        if value is None:
            return None
        if not LABEL_VALUE.fullmatch(value):
            self.error(node.line, path, f"{describe(node)} is not a label value (at most 63 "
                       "of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a "
                       "letter or digit)")  # fmt: skip
            return None
        return value

    def ipv4(self, node: Node, path: str) -> IPv4Address | None:
        """An IPv4 unicast address; IPv6 gets its own message."""
        address = self.ip(node, path, "an IPv4 address")
        if isinstance(address, IPv6Address):
            self.error(node.line, path, "IPv6 is not supported yet (IPv4 only)")
            return None
        return address

    def ip(
        self, node: Node, path: str, what: str = "an IP address"
    ) -> IPv4Address | IPv6Address | None:
        text = node.value if isinstance(node, Scalar) else None
        try:
            address = ip_address(text) if isinstance(text, str) else None
        except ValueError:
            address = None
        if address is None:
            self.error(node.line, path, f"{describe(node)} is not {what}")
            return None
        unusable = _unusable(address) if isinstance(address, IPv4Address) else None
        if unusable:
            self.error(node.line, path, f"{address} is {unusable} (expected a unicast address)")
            return None
        return address

    def cidr(self, node: Node, path: str) -> IPv4Network | None:
        """An IPv4 network written `a.b.c.d/len`, with no host bits set."""
        text = node.value if isinstance(node, Scalar) else None
        if isinstance(text, str) and ":" in text and _is_ipv6_network(text):
            self.error(node.line, path, "IPv6 is not supported yet (IPv4 only)")
            return None
        try:
            loose = IPv4Network(text, strict=False) if isinstance(text, str) else None
        except ValueError:
            loose = None
        if loose is None or not isinstance(text, str) or not _CIDR.fullmatch(text):
            self.error(
                node.line,
                path,
                f"{describe(node)} is not an IPv4 CIDR (address/prefix, e.g. 198.18.0.0/15)",
            )
            return None
        if str(loose) != text:
            self.error(node.line, path, f"{text} has host bits set (did you mean {loose}?)")
            return None
        return loose

    def port_range(self, node: Node, path: str) -> tuple[int, int] | None:
        """`[min, max]` or `"min-max"`, inclusive."""
        expected = 'is not a port range (expected [min, max] or "min-max")'
        bounds: list[int | None]
        if isinstance(node, Seq) and len(node.items) == 2:
            bounds = [self.port(item, f"{path}[{i}]") for i, item in enumerate(node.items)]
        elif isinstance(node, Scalar) and isinstance(node.value, str):
            match = _PORT_RANGE.fullmatch(node.value)
            if match is None:
                self.error(node.line, path, f"{describe(node)} {expected}")
                return None
            bounds = [self.port(Scalar(node.line, int(g)), path) for g in match.groups()]
        else:
            found = describe(node)
            if isinstance(node, Seq):
                found = f"a list of {len(node.items)} items"
            self.error(node.line, path, f"{found} {expected}")
            return None
        low, high = bounds
        if low is None or high is None:
            return None
        if low > high:
            self.error(node.line, path, f"{low}-{high} is empty (min > max)")
            return None
        return low, high


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_ipv6_network(text: str) -> bool:
    try:
        return isinstance(ip_network(text, strict=False), IPv6Network)
    except ValueError:
        return False


def int_value(node: Node) -> int | None:
    value = node.value if isinstance(node, Scalar) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def quote(text: str) -> str:
    """A value of the input, printable on one line and visibly delimited."""
    shown = repr(text)
    return shown if len(shown) <= 64 else shown[:60] + "..." + shown[-1]


def describe(node: Node) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    assert isinstance(node, Scalar)
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    return repr(value)


def _unusable(address: IPv4Address) -> str | None:
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_multicast:
        return "a multicast address"
    if address == IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if address.is_reserved:
        return "a reserved address (240.0.0.0/4)"
    return None


def ranges_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def show_range(r: tuple[int, int]) -> str:
    return f"{r[0]}-{r[1]}"


def fields_of(node: Node | None) -> Mapping[str, Node]:
    """The non-null fields of a mapping, or none; reports nothing (for lookups)."""
    if not isinstance(node, Map):
        return {}
    return {key: value for key, value in node.fields.items() if not is_null(value)}


def is_null(node: Node) -> bool:
    return isinstance(node, Scalar) and node.value is None
