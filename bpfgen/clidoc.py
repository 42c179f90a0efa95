"""What is made from the CLI's parser: the man page and the shell completions.

    python -m bpfgen.clidoc man  [--out build/man/bpfgen.1]          # make man
    python -m bpfgen.clidoc bash [--out build/completions/bpfgen]    # make completions
    python -m bpfgen.clidoc zsh  [--out build/completions/_bpfgen]

The man page is written from argparse's structure (each subcommand's usage,
description and options, the exit codes, the environment), so it cannot drift
from `bpfgen --help`. The completions come from shtab (the dev extra), with
file and directory completion for the arguments that take paths. The output is
deterministic: no date, sorted nothing, the parser's own order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bpfgen import __version__
from bpfgen.cli import COMPILER_EXIT_CODES, get_parser
from bpfgen.inputs.source import MAX_INPUT_ENV
from bpfgen_runtime.cli import EXIT_CODES, NO_IPVS_ENV, HelpFormatter

SHELLS = ("bash", "zsh")

#: The variables a user may set; the test-only ones (NO_IPVS_ENV, the fault injection)
#: are in docs/testing.md, not here.
ENVIRONMENT = (
    ("BPFGEN_CACHE_DIR", "the build cache (default $XDG_CACHE_HOME/bpfgen, ~/.cache/bpfgen)"),
    ("BPFGEN_CLANG", "the clang to use (default: the newest clang-N on PATH)"),
    (MAX_INPUT_ENV, "the size limit of each input file, in MiB (default 64)"),
    ("BPFGEN_BPFFS", "the bpffs the runtime pins under (default /sys/fs/bpf)"),
    ("BPFGEN_RUN_DIR", "the runtime's state and lock files (default /run/bpfgen)"),
)
assert all(name != NO_IPVS_ENV for name, _ in ENVIRONMENT)


def _roff(text: str) -> str:
    """Text as roff sees it literally: backslashes, hyphens (so `--out` is not a
    typographic hyphen) and a leading dot or quote (not a request)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line if line.startswith((".", "'")) else line) for line in text.split("\n")]
    return "\n".join(lines)


def _paragraph(text: str | None) -> str:
    return " ".join((text or "").split())


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the parser's order."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line, unwrapped, without argparse's "usage: " prefix."""
    formatter = parser._get_formatter()
    formatter._width = 10_000  # one line; man wraps it
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    return formatter.format_help().strip()


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """One .TP item per argument: its invocation as --help shows it, then its help."""
    formatter = parser._get_formatter()
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        invocation = formatter._format_action_invocation(action)
        help_text = formatter._expand_help(action) if action.help else ""
        out += [".TP", f"\\fB{_roff(invocation)}\\fR", _roff(_paragraph(help_text))]
    return out


def _exit_codes(codes: Sequence[tuple[int, str]]) -> list[str]:
    out = []
    for code, text in codes:
        out += [".TP", f"\\fB{code}\\fR", _roff(text)]
    return out


def man_page(parser: argparse.ArgumentParser | None = None) -> str:
    """bpfgen(1) in man(7) roff."""
    parser = parser or get_parser()
    prog = parser.prog
    subs = _subcommands(parser)
    lines: list[str] = [
        f'.TH {prog.upper()} 1 "" "{prog} {__version__}" "User Commands"',
        ".nh",  # no hyphenation: names and paths stay whole
        ".ad l",
        ".SH NAME",
        f"{prog} \\- {_roff(_paragraph(parser.description))}",
        ".SH SYNOPSIS",
    ]
    for name, _, sub in subs:  # .SY: the command in bold, its arguments wrapped after it
        lines += [f'.SY "{prog} {name}"', _roff(_usage(sub).split(" ", 2)[2]), ".YS"]
    lines += [
        ".SH DESCRIPTION",
        _roff(_paragraph(parser.description)),
        ".PP",
        "Commands:",
    ]
    for name, help_text, _ in subs:
        lines += [".TP", f"\\fB{name}\\fR", _roff(_paragraph(help_text))]
    lines += [".SH OPTIONS", *_options(parser)]
    for name, _, sub in subs:
        lines.append(f'.SH "{prog.upper()} {name.upper()}"')
        if sub.description:
            lines += [".PP", _roff(_paragraph(sub.description))]
        lines += _options(sub)
    lines += [".SH EXIT STATUS", "The compiler's commands (compile, plan, inspect, replay):"]
    lines += _exit_codes(COMPILER_EXIT_CODES)
    lines += [".PP", "The node's commands (up, sync, status, down):", *_exit_codes(EXIT_CODES)]
    lines += [".SH ENVIRONMENT"]
    for var, text in ENVIRONMENT:
        lines += [".TP", f"\\fB{_roff(var)}\\fR", _roff(text)]
    lines += [
        ".SH SEE ALSO",
        ".BR clang (1),",
        ".BR bpftool (8),",
        ".BR ipvsadm (8);",
        "README.md and docs/runtime.md in bpfgen's source.",
    ]
    return "\n".join(lines) + "\n"


def _mark_paths(parser: argparse.ArgumentParser, shtab: Any) -> None:
    """shtab's `complete` hint on every argument that takes a path: a directory for
    DIR, a file otherwise (shtab reads the attribute from the action)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_paths(sub, shtab)
        elif action.type is Path:
            is_dir = action.metavar == "DIR"
            action.complete = shtab.DIRECTORY if is_dir else shtab.FILE  # type: ignore[attr-defined]


def completion(shell: str, parser: argparse.ArgumentParser | None = None) -> str:
    """The completion script for `shell` (bash or zsh); needs shtab (the dev extra)."""
    import shtab

    parser = parser or get_parser()
    _mark_paths(parser, shtab)
    return shtab.complete(parser, shell=shell)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bpfgen.clidoc",
        description="Write bpfgen's man page or a shell completion script.",
        formatter_class=HelpFormatter,
    )
    ap.add_argument("what", choices=("man", *SHELLS), help="the man page, or a shell's script")
    ap.add_argument("--out", type=Path, default=None, help="write here (default: stdout)")
    args = ap.parse_args(argv)
    text = man_page() if args.what == "man" else completion(args.what)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
