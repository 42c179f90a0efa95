"""Stage 3: the plan rendered to C. The only module that uses Jinja.

One environment, StrictUndefined, sorted input: the same plan always gives
the same bytes. Hand-written headers are copied as they are, so the build
directory is self-contained (clang needs nothing from the package).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import jinja2

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


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bpfgen.templates", "programs"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


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
        text = env.get_template(program.template).render(plan=plan, program=program)
        files.append(RenderedFile(program.source, text))
    return Rendered(tuple(files) + include_headers())
