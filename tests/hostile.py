"""Hostile text for the C-injection and fuzz tests (issue #13 item 1, (a)).

`MARK` is in every hostile string: `code_outside_comments` is generated C as the
compiler sees it (lines spliced, trigraphs replaced, comments removed), and the
mark must never be in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

MARK = "ZZINJ"

#: Each breaks a C comment or line in another way; the first ones as the issue found them.
PAYLOADS = (
    f"*/ extern int {MARK}; /*",
    f"x\n#define {MARK} 1\n",
    f"/* {MARK}",
    f"{MARK} */ int {MARK}2;",
    f"{MARK}\\",
    f"{MARK}??/",
    f"{MARK}\0nul",
    f"{MARK} \u00e9\u2603\u2028\U0001f600",
    f"#define {MARK} 1",
)
#: The same behind a cgroup-like prefix, so that datapath.cgroup's validation (an
#: absolute, normalized path) lets the ones without control characters reach the C.
HOSTILE = PAYLOADS + tuple(f"/sys/fs/cgroup/{p}" for p in PAYLOADS)
#: Three that between them hold every hazard: for every field (the full list is
#: for the fields whose text reaches the C).
HOSTILE_SHORT = (
    PAYLOADS[0],
    PAYLOADS[1],
    f"/sys/fs/cgroup/{MARK} */ /* ??/ \\ \u00e9\u2603 \0 \n#define {MARK} 1",
)

_TRIGRAPHS = {
    "=": "#",
    "/": "\\",
    "'": "^",
    "(": "[",
    ")": "]",
    "!": "|",
    "<": "{",
    ">": "}",
    "-": "~",
}
_TOKENS = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*', re.S)


def code_outside_comments(c_text: str) -> str:
    """C text with comments removed, after trigraphs and line splicing (the worst case:
    trigraphs on). An unterminated comment is kept as code, so it is found."""
    text = re.sub(r"\?\?([=/'()!<>-])", lambda m: _TRIGRAPHS[m.group(1)], c_text)
    text = text.replace("\\\n", "")

    def replace(m: re.Match[str]) -> str:
        token = m.group()
        if token.startswith("/*") and token.endswith("*/") and len(token) >= 4:
            return " "
        if token.startswith("//"):
            return ""
        return token

    return _TOKENS.sub(replace, text)


def string_paths(tree: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path (keys and indexes) of every string value in a YAML/JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from string_paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from string_paths(value, (*prefix, i))
    elif isinstance(tree, str):
        yield prefix


def shape(path: tuple[Any, ...]) -> tuple[Any, ...]:
    """A path with list indexes as '*': one field of every kind of object."""
    return tuple("*" if isinstance(p, int) else p for p in path)


def replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of `tree` with the value at `path` replaced."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {k: (replaced(v, rest, value) if k == head else v) for k, v in tree.items()}
    assert isinstance(tree, list)
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(tree)]
