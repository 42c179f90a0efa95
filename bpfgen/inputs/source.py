"""Read an input file into trees whose every value knows its line.

This is the only place bpfgen reads or parses its inputs. `read_source` returns a
`Source`: the raw bytes (for the config hash), the documents as `Map` / `Seq` /
`Scalar` nodes with 1-based line numbers, and at most one `SourceError` when
the file cannot be read or parsed (then there are no documents). It is
`read_input` (the bytes, read once and bounded in size) then `parse_input`.

YAML is read from PyYAML's event stream (libyaml when available; the pure
Python parser words the error when libyaml rejects a file), with YAML 1.1
scalar resolution as PyYAML's SafeLoader does it. Building the tree here
rather than with `yaml.compose` keeps what `compose` loses or hides: the line
of every mapping key, duplicate keys (kept on the node so the reader of that
mapping reports them with a path), aliases kept as shared references (an
alias bomb expands nothing) and recursive aliases refused.

A file whose first character is `{` or `[` is read as JSON first, by a small
line-tracking JSON parser: JSON allows tabs between tokens where YAML does not.
If it is not JSON after all it is read as YAML (flow-style YAML also starts
with `{`), and when both fail the error of the parser that got further is
reported.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
import yaml.resolver

ScalarValue = str | int | float | bool | None


@dataclass(frozen=True, eq=False, slots=True)
class Node:
    line: int  # 1-based line where the value starts


@dataclass(frozen=True, eq=False, slots=True)
class Scalar(Node):
    value: ScalarValue


@dataclass(frozen=True, eq=False, slots=True)
class Seq(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Map(Node):
    fields: dict[str, Node]  # keys in document order
    key_lines: dict[str, int]  # line of each key
    duplicates: tuple[tuple[str, int, int], ...] = ()  # (key, line, line of the first)


@dataclass(frozen=True)
class Document:
    index: int  # 0-based position in the stream
    root: Node


@dataclass(frozen=True)
class SourceError:
    line: int  # 1 when the problem is the whole file (unreadable, too large, empty)
    message: str


@dataclass(frozen=True)
class Source:
    file: str  # the path as given
    data: bytes  # raw content, b"" when unreadable
    documents: tuple[Document, ...] = ()
    error: SourceError | None = None


#: The largest input file read (bytes): far above any node file and, at a few
#: KB per Service with its EndpointSlice, room for tens of thousands of Services
#: in one `kubectl get svc,endpointslices -A -o yaml`. BPFGEN_MAX_INPUT_MB
#: overrides it (README "Using it").
DEFAULT_MAX_INPUT_BYTES = 64 << 20
MAX_INPUT_ENV = "BPFGEN_MAX_INPUT_MB"
#: The longest integer literal (characters, sign and 0x included) read: above
#: any 64-bit value in any base, far below CPython's 4,300-digit str/int limit.
MAX_INT_CHARS = 100


def max_input_bytes() -> int:
    """The input size limit: BPFGEN_MAX_INPUT_MB (a positive integer) or the default."""
    text = os.environ.get(MAX_INPUT_ENV, "")
    if text.strip().isdigit() and len(text.strip()) <= 7 and int(text) > 0:
        return int(text) << 20
    return DEFAULT_MAX_INPUT_BYTES


def read_source(path: Path, limit: int | None = None) -> Source:
    """Read and parse one input file; never raises for bad content."""
    return parse_input(read_input(path, limit))


def read_input(path: Path, limit: int | None = None) -> Source:
    """The bytes of one input, not parsed yet (no documents); never raises.

    The file is opened and read once, whatever it is (a regular file, a pipe
    such as `<(kubectl ...)`, a FIFO, /dev/stdin): `data` is what is parsed
    and what the config hash and the build cache key are made of. At most
    `limit` bytes (default `max_input_bytes()`) are read; a larger or endless
    input (/dev/zero) is refused without reading further.
    """
    file = str(path)
    limit = max_input_bytes() if limit is None else limit
    try:
        data = _read_bounded(path, limit)
    except OSError as e:
        return Source(file, b"", error=SourceError(1, f"cannot read: {e.strerror or e}"))
    if data is None:
        return Source(
            file,
            b"",
            error=SourceError(
                1, f"is larger than {_size(limit)} (the input limit; {MAX_INPUT_ENV} raises it)"
            ),
        )
    return Source(file, data)


def parse_input(source: Source) -> Source:
    """`source` (from read_input) with its documents, or the error that stopped them."""
    if source.error is not None:
        return source
    file, data = source.file, source.data
    try:
        text = _decode(data)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        encoding = "UTF-16" if e.encoding.startswith("utf-16") else "UTF-8"
        message = f"not {encoding} text (byte {data[e.start]:#04x} at offset {e.start})"
        return Source(file, data, error=SourceError(line, message))
    try:
        return Source(file, data, documents=tuple(parse_text(text)))
    except ParseError as e:
        return Source(file, data, error=SourceError(e.line, e.message))


def _read_bounded(path: Path, limit: int) -> bytes | None:
    """The whole content, or None when it is longer than `limit` bytes."""
    with path.open("rb") as f:
        if stat.S_ISDIR(os.fstat(f.fileno()).st_mode):  # open() succeeds on some systems
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = f.read(min(1 << 20, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
    return None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"


def parse_text(text: str) -> list[Document]:
    """Parse YAML or JSON text into documents; raises `ParseError` when invalid."""
    if text.lstrip(" \t\r\n")[:1] in ("{", "["):
        try:
            return [Document(0, _JsonParser(text).parse())]
        except ParseError as json_error:
            try:
                return _parse_yaml(text)
            except ParseError as yaml_error:
                raise max(json_error, yaml_error, key=lambda e: e.line) from None
    return _parse_yaml(text)


class ParseError(Exception):
    """The text is not YAML/JSON (or uses what bpfgen refuses, e.g. recursive aliases)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


# ----------------------------------------------------------------------------- YAML

_TAG = "tag:yaml.org,2002:"
_IMPLICIT: dict[str | None, list[tuple[str, re.Pattern[str]]]] = (
    yaml.resolver.Resolver.yaml_implicit_resolvers
)
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_DECIMAL = re.compile(r"-?[1-9][0-9]*|0")
_MAX_DEPTH = 500  # nesting deeper than any manifest; keeps recursion elsewhere safe


def _parse_yaml(text: str) -> list[Document]:
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _Builder().build(yaml.parse(text, Loader=fast))
        except yaml.YAMLError:
            pass  # reparse with the Python parser below: its messages are the reference
    try:
        return _Builder().build(yaml.parse(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = e.problem or e.context or "invalid YAML"
        if e.context and e.problem and e.context_mark is not None:
            message = f"{message} ({e.context} at line {e.context_mark.line + 1})"
        raise ParseError(mark.line + 1 if mark else 1, f"invalid YAML: {message}") from None
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise ParseError(line, f"invalid YAML: {_reader_message(e)}") from None
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error is one of the above
        raise ParseError(1, f"invalid YAML: {e}") from None


def _reader_message(e: yaml.reader.ReaderError) -> str:
    char: Any = e.character
    if isinstance(char, bytes):
        return f"cannot decode byte {char[0]:#04x}"
    code = char if isinstance(char, int) else ord(char)
    return f"character #x{code:04x} is not allowed in YAML"


@dataclass(eq=False)
class _Frame:
    line: int
    anchor: str | None
    items: list[Node] | None = None  # a sequence being built
    fields: dict[str, Node] | None = None  # a mapping being built
    key_lines: dict[str, int] = field(default_factory=dict)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)
    merges: list[tuple[Node, int]] = field(default_factory=list)
    key: str | None = None  # mapping: the key waiting for its value
    key_line: int = 0
    key_is_merge: bool = False


_IN_PROGRESS = Scalar(0, None)  # anchor of a collection still being built


class _Builder:
    """Turns a PyYAML event stream into documents of Nodes (iteratively)."""

    def __init__(self) -> None:
        self.anchors: dict[str, Node] = {}
        self.stack: list[_Frame] = []
        self.documents: list[Document] = []
        self.plain: dict[str, ScalarValue] = {}  # plain scalar text -> value, memoized

    def build(self, events: Iterator[yaml.Event]) -> list[Document]:
        for event in events:
            line = event.start_mark.line + 1 if event.start_mark is not None else 0
            if isinstance(event, yaml.ScalarEvent):
                self._scalar(event, line)
            elif isinstance(event, yaml.AliasEvent):
                self._alias(event.anchor or "", line)
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                self._check_tag(event.tag, line, collection=True)
                if len(self.stack) >= _MAX_DEPTH:
                    raise ParseError(line, f"nested more than {_MAX_DEPTH} levels deep")
                if isinstance(event, yaml.SequenceStartEvent):
                    frame = _Frame(line, event.anchor, items=[])
                else:
                    frame = _Frame(line, event.anchor, fields={})
                if event.anchor is not None:
                    self.anchors[event.anchor] = _IN_PROGRESS
                self.stack.append(frame)
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                self._end_collection()
            elif isinstance(event, yaml.DocumentStartEvent):
                self.anchors = {}
        return self.documents

    def _check_tag(self, tag: str | None, line: int, *, collection: bool) -> None:
        if tag is None or tag == "!":
            return
        allowed: tuple[str, ...] = ("seq", "map")
        if not collection:
            allowed = ("str", "int", "float", "bool", "null", "timestamp", "binary")
        if not (tag.startswith(_TAG) and tag[len(_TAG) :] in allowed):
            raise ParseError(line, f"unsupported YAML tag {tag!r}")

    def _scalar(self, event: yaml.ScalarEvent, line: int) -> None:
        text, tag = event.value, event.tag
        top = self.stack[-1] if self.stack else None
        if top is not None and top.fields is not None and top.key is None:
            # A mapping key: keep its text (Kubernetes keys are strings).
            top.key, top.key_line = text, line
            top.key_is_merge = tag is None and event.implicit[0] and text == "<<"
            node: Node = Scalar(line, text)
        else:
            value: ScalarValue
            if tag is None and event.implicit[0]:  # plain: resolved as YAML 1.1 does
                if text in self.plain:
                    value = self.plain[text]
                else:
                    value = _construct(_resolve(text, plain=True), text, line)
                    if len(self.plain) < 4096:
                        self.plain[text] = value
            elif tag is None or tag == "!":  # quoted
                value = text
            else:
                self._check_tag(tag, line, collection=False)
                value = _construct(tag, text, line)
            node = Scalar(line, value)
            self._add(node)
        if event.anchor is not None:
            self.anchors[event.anchor] = node

    def _alias(self, anchor: str, line: int) -> None:
        node = self.anchors.get(anchor)
        if node is None:
            raise ParseError(line, f"invalid YAML: found undefined alias {anchor!r}")
        if node is _IN_PROGRESS:
            raise ParseError(line, f"invalid YAML: alias {anchor!r} refers to itself")
        top = self.stack[-1] if self.stack else None
        if top is not None and top.fields is not None and top.key is None:
            if not (isinstance(node, Scalar) and isinstance(node.value, str)):
                raise ParseError(line, "a mapping key must be a string")
            top.key, top.key_line, top.key_is_merge = node.value, line, False
            return
        self._add(node)

    def _end_collection(self) -> None:
        frame = self.stack.pop()
        node: Node
        if frame.items is not None:
            node = Seq(frame.line, tuple(frame.items))
        else:
            assert frame.fields is not None
            fields, key_lines = frame.fields, frame.key_lines
            for source, line in frame.merges:
                for key, value, key_line in _merge_sources(source, line):
                    if key not in fields:
                        fields[key] = value
                        key_lines[key] = key_line
            node = Map(frame.line, fields, key_lines, tuple(frame.duplicates))
        if frame.anchor is not None:
            self.anchors[frame.anchor] = node
        self._add(node)

    def _add(self, node: Node) -> None:
        if not self.stack:
            self.documents.append(Document(len(self.documents), node))
            return
        top = self.stack[-1]
        if top.items is not None:
            top.items.append(node)
            return
        assert top.fields is not None
        if top.key is None:  # a sequence or mapping used as a key
            raise ParseError(node.line, "a mapping key must be a string")
        key, line = top.key, top.key_line
        top.key = None
        if top.key_is_merge:
            top.merges.append((node, line))
        elif key in top.fields:
            top.duplicates.append((key, line, top.key_lines[key]))
            top.fields[key] = node
        else:
            top.fields[key] = node
            top.key_lines[key] = line


def _merge_sources(source: Node, line: int) -> list[tuple[str, Node, int]]:
    """The (key, value, key line) a `<<` merge brings in; earlier sources win."""
    maps = source.items if isinstance(source, Seq) else (source,)
    merged: list[tuple[str, Node, int]] = []
    for m in maps:
        if not isinstance(m, Map):
            raise ParseError(line, "invalid YAML: '<<' needs a mapping or a list of mappings")
        merged.extend((key, value, m.key_lines[key]) for key, value in m.fields.items())
    return merged


def _resolve(value: str, *, plain: bool) -> str:
    """The tag YAML 1.1 gives an untagged scalar, as PyYAML's SafeLoader resolves it."""
    if plain:
        for tag, regexp in _IMPLICIT.get(value[:1], []) + _IMPLICIT.get(None, []):
            if regexp.match(value):
                return tag
    return _TAG + "str"


def _construct(tag: str, value: str, line: int) -> ScalarValue:
    kind = tag[len(_TAG) :]
    if kind == "null":
        return None
    if kind not in ("int", "float", "bool"):
        return value  # str, and timestamps/binary kept as text: nothing here needs them
    if kind == "int" and len(value) > MAX_INT_CHARS:
        raise ParseError(line, _long_integer(value))
    if kind == "int" and _DECIMAL.fullmatch(value):
        return int(value)
    node = yaml.ScalarNode(tag, value)
    try:
        result: Any
        if kind == "int":
            result = _CONSTRUCTOR.construct_yaml_int(node)
        elif kind == "float":
            result = _CONSTRUCTOR.construct_yaml_float(node)
        else:
            result = _CONSTRUCTOR.construct_yaml_bool(node)
    except (ValueError, KeyError):
        raise ParseError(line, f"{value!r} is not a valid !!{kind}") from None
    assert isinstance(result, int | float | bool)
    return result


def _long_integer(text: str) -> str:
    return f"an integer of {len(text)} characters is too long (at most {MAX_INT_CHARS})"


# ----------------------------------------------------------------------------- JSON

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_JSON_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_JSON_WORDS: dict[str, ScalarValue] = {"true": True, "false": False, "null": None}


class _JsonParser:
    """RFC 8259 JSON into Nodes, with lines; iterative for nesting depth."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def fail(self, pos: int, message: str) -> ParseError:
        return ParseError(self.line(pos), f"invalid JSON: {message}")

    def skip(self, pos: int) -> int:
        match = _JSON_SPACE.match(self.text, pos)
        assert match is not None
        return match.end()

    def parse(self) -> Node:
        text = self.text
        pos = self.skip(0)
        if text.startswith("\ufeff"):
            pos = self.skip(1)
        stack: list[_Frame] = []
        root: Node | None = None
        while True:
            # Parse one value (or open a container) at pos.
            pos = self.skip(pos)
            if pos >= len(text):
                raise self.fail(pos, "unexpected end of input")
            char = text[pos]
            node: Node | None = None
            if char in "[{":
                if len(stack) >= _MAX_DEPTH:
                    raise self.fail(pos, f"nested more than {_MAX_DEPTH} levels deep")
                frame = _Frame(self.line(pos), None)
                if char == "[":
                    frame.items = []
                else:
                    frame.fields = {}
                stack.append(frame)
                pos = self.skip(pos + 1)
                closing = "]" if char == "[" else "}"
                if text.startswith(closing, pos):
                    pos += 1
                    node = self.close(stack.pop())
                elif char == "{":
                    pos = self.key(frame, pos)
                    continue
                else:
                    continue
            elif char == '"':
                node, pos = self.string(pos)
            else:
                node, pos = self.atom(pos)
            # A value is complete: hand it to its container, closing as many as end here.
            while True:
                if not stack:
                    root = node
                    break
                frame = stack[-1]
                self.attach(frame, node)
                pos = self.skip(pos)
                closing = "]" if frame.items is not None else "}"
                if text.startswith(",", pos):
                    pos = self.skip(pos + 1)
                    if frame.fields is not None:
                        pos = self.key(frame, pos)
                    break
                if text.startswith(closing, pos):
                    pos += 1
                    node = self.close(stack.pop())
                    continue
                raise self.fail(pos, f"expected ',' or {closing!r}")
            if root is not None:
                break
        pos = self.skip(pos)
        if pos < len(text):
            raise self.fail(pos, "extra data after the JSON value")
        return root

    def key(self, frame: _Frame, pos: int) -> int:
        if not self.text.startswith('"', pos):
            raise self.fail(pos, "expected a string key")
        key, end = self.string(pos)
        assert isinstance(key, Scalar) and isinstance(key.value, str)
        end = self.skip(end)
        if not self.text.startswith(":", end):
            raise self.fail(end, "expected ':'")
        frame.key, frame.key_line = key.value, key.line
        return end + 1

    def string(self, pos: int) -> tuple[Node, int]:
        match = _JSON_STRING.match(self.text, pos)
        if match is None:
            raise self.fail(pos, "invalid string (unterminated, bad escape or control character)")
        value = json.loads(match.group())
        assert isinstance(value, str)
        return Scalar(self.line(pos), value), match.end()

    def atom(self, pos: int) -> tuple[Node, int]:
        for word, value in _JSON_WORDS.items():
            if self.text.startswith(word, pos):
                return Scalar(self.line(pos), value), pos + len(word)
        match = _JSON_NUMBER.match(self.text, pos)
        if match is None:
            raise self.fail(pos, f"unexpected character {self.text[pos]!r}")
        text = match.group()
        if not (match.group(1) or match.group(2)) and len(text) > MAX_INT_CHARS:
            raise ParseError(self.line(pos), _long_integer(text))
        number = float(text) if match.group(1) or match.group(2) else int(text)
        return Scalar(self.line(pos), number), match.end()

    def attach(self, frame: _Frame, node: Node) -> None:
        if frame.items is not None:
            frame.items.append(node)
            return
        assert frame.fields is not None and frame.key is not None
        key, line = frame.key, frame.key_line
        frame.key = None
        if key in frame.fields:
            frame.duplicates.append((key, line, frame.key_lines[key]))
        else:
            frame.key_lines[key] = line
        frame.fields[key] = node

    @staticmethod
    def close(frame: _Frame) -> Node:
        if frame.items is not None:
            return Seq(frame.line, tuple(frame.items))
        assert frame.fields is not None
        return Map(frame.line, frame.fields, frame.key_lines, tuple(frame.duplicates))
