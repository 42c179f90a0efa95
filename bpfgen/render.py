"""Stage 3: the plan rendered to C. The only module that uses Jinja.

One environment, StrictUndefined, sorted input: the same plan always gives
the same bytes. Hand-written headers are copied as they are, so the build
directory is self-contained (clang needs nothing from the package).

Text reaches the C through one function, `c_comment` (the templates' filter
of the same name): every value a template prints inside a `/* */` comment
passes through it, and it makes any text one inert line of comment. The
environment's `finalize` checks every other printed value: a string that
`c_comment` would change (a newline, `*/`, `/*`, `??`, a backslash, a
control or non-ASCII character) is refused with `RenderError`, so no text can
end a comment, splice a line or open a preprocessor line, whichever template
prints it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import jinja2

from bpfgen.errors import BpfgenError
from bpfgen.plan import Plan

CONFIG_HEADER = "node_config.h"


@dataclass(frozen=True)
class RenderedFile:
    path: str  # relative to the build directory
    text: str


@dataclass(frozen=True)
class Rendered:
    """Every file of a build directory's source tree, by relative path."""

    files: tuple[RenderedFile, ...]

    def text(self, path: str) -> str:
        for f in self.files:
            if f.path == path:
                return f.text
        raise KeyError(path)


class CComment(str):
    """Text made safe inside a C block comment by `c_comment`."""


_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\"}
_COMMENT_BREAKERS = re.compile(r"\*(?=/)|/(?=\*)|\?(?=\?)")


def c_comment(value: object) -> CComment:
    """`value` as text that stays inside a `/* */` comment, on one line.

    Printable ASCII is kept, except that a backslash is written `\\x5c`;
    every other character is escaped as in Python (`\\n`, `\\x00`, `\\u00e9`).
    A backslash is inserted to break `*/` (which would end the comment), `/*`
    (clang's -Wcomment) and `??` (a trigraph such as `??/`, a backslash, where
    trigraphs are on). The result has no newline and no line-ending backslash.
    """
    if isinstance(value, CComment):
        return value
    out = []
    for ch in str(value):
        if ch in _PRINTABLE:
            out.append(ch)
        elif ch == "\\":
            out.append("\\x5c")
        else:
            escaped = ascii(ch)[1:-1]  # '\\n', '\\x00', '\\u00e9', '\\U0001f600'
            out.append(escaped)
    text = _COMMENT_BREAKERS.sub(lambda m: m.group() + "\\", "".join(out))
    return CComment(text)


class RenderError(BpfgenError):
    """A template printed text outside `c_comment` that would change the C (a bpfgen bug)."""


def _finalize(value: object) -> object:
    """Every `{{ }}` of every template: numbers and escaped text as they are; any other
    string only when it is one inert line (c_comment would leave it unchanged)."""
    if isinstance(value, CComment) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    text = str(value)
    if c_comment(text) != text:
        raise RenderError(
            f"render: {text[:80]!r} would reach the C unescaped "
            "(print text in comments through | c_comment)"
        )
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bpfgen.templates", "programs"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_finalize,
    )
    env.filters["c_comment"] = c_comment
    return env


def include_headers() -> tuple[RenderedFile, ...]:
    """The plain headers of templates/include, as they are."""
    root = resources.files("bpfgen.templates") / "include"
    return tuple(
        RenderedFile(f"include/{h.name}", h.read_text(encoding="utf-8"))
        for h in sorted(root.iterdir(), key=lambda t: t.name)
        if h.name.endswith(".h")
    )


def render(plan: Plan) -> Rendered:
    env = _environment()
    files = [RenderedFile(CONFIG_HEADER, env.get_template("node_config.h.j2").render(plan=plan))]
    rendered: set[str] = set()
    for program in plan.programs:
        if program.source in rendered:  # several programs of one object: one source file
            continue
        rendered.add(program.source)
        text = env.get_template(program.template).render(
            plan=plan, program=program, program_id=plan.programs.index(program)
        )
        files.append(RenderedFile(program.source, text))
    return Rendered(tuple(files) + include_headers())
