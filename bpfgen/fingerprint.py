"""The fingerprint of the compiler: the code and templates that turn inputs into a build.

The build cache (compiler.py) keys a whole build on its inputs, the toolchain and this
digest, so the digest must cover everything that shapes the output and, to keep the
cache useful, nothing else: editing the CLI, the reference models or anything else
outside the pipeline must not invalidate every cached build.

The pipeline's modules are found, not listed: every module of bpfgen that the entry
module (`bpfgen.compiler`, which runs every stage) imports, directly or through
another, at the top of a module or inside a function, read from the source text
(nothing is imported or run). A module split or added later is covered as soon as the
pipeline imports it; a module the pipeline does not import cannot change a build. The
packages a module sits in count too (their `__init__.py` runs on import). The templates
are every file under bpfgen.templates. The contract between compiler and node
(`bpfgen_runtime.contract`: enums, struct layouts, the manifest's model) shapes every
build, so each of its modules counts too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import bpfgen_runtime.contract

PACKAGE = "bpfgen"
ENTRY = "bpfgen.compiler"
PACKAGE_DIR = Path(__file__).resolve().parent
CONTRACT = "bpfgen_runtime.contract"
CONTRACT_DIR = Path(bpfgen_runtime.contract.__file__).resolve().parent


def _package_modules(package_dir: Path) -> dict[str, Path]:
    """Module name -> source file of every module below package_dir (one walk)."""
    modules: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        where = Path(dirpath)
        prefix = ".".join((PACKAGE, *where.relative_to(package_dir).parts))
        for name in filenames:
            if name == "__init__.py":
                modules[prefix] = where / name
            elif name.endswith(".py"):
                modules[f"{prefix}.{name[:-3]}"] = where / name
    return modules


def _find(text: str, sub: str, start: int) -> int:
    """Where sub first occurs in text from start, or the end of text."""
    at = text.find(sub, start)
    return len(text) if at < 0 else at


def _statements(text: str) -> Iterator[str]:
    """The import statements of a module's text, comments dropped, a parenthesized name
    list joined into one line. Read as text rather than parsed (`ast` would cost a cached
    compile a good part of its time): every statement holds "import ", so only the lines
    around its occurrences are looked at. A line in a docstring that reads like an import
    only adds a module to the digest, which is the safe direction."""
    at = text.find("import ")
    while at >= 0:
        start = text.rfind("\n", 0, at) + 1
        end = _find(text, "\n", at)
        statement = text[start:end].lstrip().partition("#")[0]
        if statement.startswith(("from ", "import ")):
            if "(" in statement and ")" not in statement:
                close = _find(text, ")", end)
                rest = (line.partition("#")[0] for line in text[end : close + 1].splitlines())
                statement += " ".join(rest)
                end = close
            yield statement.replace("\\", " ")
        at = text.find("import ", end)


def _names(text: str) -> list[str]:
    """`a as b, c` or `(a, c,)` -> [a, c]."""
    return [item.split()[0] for item in text.strip(" ()").split(",") if item.strip()]


def _imports(path: Path, module: str) -> set[str]:
    """Every bpfgen module name `path` (the module `module`) may import, absolute; for
    `from X import y`, both X and X.y (y may be a submodule or a name in X)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for statement in _statements(path.read_text()):
        keyword, _, rest = statement.partition(" ")
        if keyword == "import":
            names.update(_names(rest))
            continue
        base, _, imported = rest.partition(" import ")
        base = base.strip()
        level = len(base) - len(base.lstrip("."))
        if level:
            anchor = package.split(".")[: package.count(".") + 2 - level]
            base = ".".join(anchor + ([base[level:]] if base[level:] else []))
        names.add(base)
        names.update(f"{base}.{name}" for name in _names(imported))
    # Importing bpfgen.a.b runs bpfgen/__init__.py and bpfgen/a/__init__.py first.
    ours = [n.split(".") for n in names if n.partition(".")[0] == PACKAGE]
    return {".".join(parts[:i]) for parts in ours for i in range(1, len(parts) + 1)}


def pipeline_modules(package_dir: Path = PACKAGE_DIR, entry: str = ENTRY) -> dict[str, Path]:
    """Module name -> source file of every bpfgen module the entry module reaches."""
    modules = _package_modules(package_dir)
    found: dict[str, Path] = {}
    seen = {entry}
    todo = [entry]
    while todo:
        module = todo.pop()
        path = modules.get(module)
        if path is not None:
            found[module] = path
            new = _imports(path, module) - seen
            seen |= new
            todo.extend(new)
    return dict(sorted(found.items()))


def _template_files(root: Traversable, prefix: str = "") -> list[tuple[str, bytes]]:
    """(relative path, bytes) of every template file below root, sorted; the package's
    own Python (its __init__.py, byte code) is not a template."""
    files: list[tuple[str, bytes]] = []
    for entry in sorted(root.iterdir(), key=lambda t: t.name):
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            if entry.name != "__pycache__":
                files += _template_files(entry, f"{rel}/")
        elif not entry.name.endswith((".py", ".pyc")):
            files.append((rel, entry.read_bytes()))
    return files


def compiler_digest(
    package_dir: Path = PACKAGE_DIR,
    templates: Traversable | None = None,
    contract_dir: Path = CONTRACT_DIR,
) -> bytes:
    """sha256 over the templates, the pipeline's modules and the contract's, each named
    by its path."""
    h = hashlib.sha256()
    root = templates if templates is not None else resources.files("bpfgen.templates")
    for rel, data in _template_files(root):
        h.update(f"templates/{rel}\0{len(data)}\0".encode())
        h.update(data)
    for path in pipeline_modules(package_dir).values():
        data = path.read_bytes()
        h.update(f"{PACKAGE}/{path.relative_to(package_dir).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    for path in sorted(contract_dir.glob("*.py")):
        data = path.read_bytes()
        h.update(f"{CONTRACT}/{path.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.digest()
