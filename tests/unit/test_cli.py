"""The CLI's conventions: help everywhere, required arguments, choices from the code,
no test flags, status's exit codes, the man page and the completions made from it."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bpfgen import cli
from bpfgen.clidoc import ENVIRONMENT, completion, man_page
from bpfgen.plan import BUILD_KINDS
from bpfgen_runtime import cli as runtime_cli
from bpfgen_runtime.replay import verdict_name

RUNTIME_VERBS = set(runtime_cli.RUNTIME_COMMANDS)
COMMANDS = [
    "compile",
    "plan",
    "inspect",
    "replay",
    "schema",
    "agent",
    "up",
    "sync",
    "status",
    "down",
    "trace",
]
JSON_ONLY = {"schema"}  # prints JSON whatever is asked: no --json to ask for it


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub


def _all_parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """bpfgen, each of its subcommands, and bpfgen-runtime's (the node-only CLI)."""
    for top in (cli.get_parser(), _runtime_parser()):
        yield top.prog, top
        for name, p in _subparsers(top).choices.items():
            yield f"{top.prog} {name}", p


def _runtime_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bpfgen-runtime")
    runtime_cli.add_subcommands(ap.add_subparsers(dest="command", required=True))
    return ap


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings]


def test_the_commands() -> None:
    assert list(_subparsers(cli.get_parser()).choices) == COMMANDS


@pytest.mark.parametrize("where", [name for name, _ in _all_parsers()])
def test_every_subcommand_and_argument_has_help(where: str) -> None:
    parser = dict(_all_parsers())[where]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helpless = [a.dest for a in action._choices_actions if not a.help]
            assert helpless == [], where
        else:
            assert action.help, (where, action.dest)


def test_no_test_only_flags() -> None:
    """Switches that exist for tests are environment variables (docs/testing.md)."""
    for where, parser in _all_parsers():
        for action in parser._actions:
            assert "test" not in (action.help or "").lower(), (where, action.dest, action.help)
            assert "--no-ipvs" not in action.option_strings, where


def test_ipvs_switch_is_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BPFGEN_RUN_DIR", str(tmp_path))
    args = cli.get_parser().parse_args(["up", str(tmp_path)])
    monkeypatch.delenv(runtime_cli.NO_IPVS_ENV, raising=False)
    assert runtime_cli.runtime_options(args).ipvs
    monkeypatch.setenv(runtime_cli.NO_IPVS_ENV, "0")
    assert runtime_cli.runtime_options(args).ipvs
    monkeypatch.setenv(runtime_cli.NO_IPVS_ENV, "1")
    assert not runtime_cli.runtime_options(args).ipvs
    assert runtime_cli.runtime_options(args).run_dir == str(tmp_path)


def test_build_kinds_are_the_plans() -> None:
    for command in ("compile", "plan"):
        sub = _subparsers(cli.get_parser()).choices[command]
        (build,) = (a for a in sub._actions if "--build" in a.option_strings)
        assert tuple(build.choices or ()) == BUILD_KINDS
        assert "{" + ",".join(BUILD_KINDS) + "}" in sub.format_help()


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["compile", "--services", "s.yaml", "--out", "o"], "--node"),
        (["compile", "--node", "n.yaml", "--out", "o"], "--services"),
        (["compile", "--node", "n.yaml", "--services", "s.yaml"], "--out"),
        (["plan", "--node", "n.yaml"], "--services"),
        (["replay", "d", "--hex", "00"], "--program"),
        (["sync", "d"], "--services"),
        (["up"], "DIR"),
    ],
)
def test_required_arguments_are_argparses(
    argv: list[str], missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required:" in err and missing in err, err


def test_bpfgen_runtime_sync_takes_no_inputs() -> None:
    """bpfgen-runtime's sync applies DIR as built: --services is bpfgen's alone."""
    sync = _subparsers(_runtime_parser()).choices["sync"]
    assert "--services" not in _options(sync) and "--node" not in _options(sync)


def test_json_everywhere_a_script_reads() -> None:
    for name, sub in _subparsers(cli.get_parser()).choices.items():
        assert "--json" in _options(sub) or name in JSON_ONLY, name


def _status(info: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    monkeypatch.setenv("BPFGEN_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(runtime_cli, "status", lambda opts: info)
    return cli.main(["status", "--json"])


@pytest.mark.parametrize(
    ("up", "in_sync", "code"),
    [(True, True, 0), (True, False, 3), (False, True, 3), (False, False, 3)],
)
def test_status_exit_code_is_systemctl_is_actives(
    up: bool,
    in_sync: bool,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """0 only when up and converged; 3 when drifted or not up (`systemctl is-active`)."""
    info = {"netns": None, "up": up, "in_sync": in_sync, "differences": []}
    assert _status(info, monkeypatch, tmp_path) == code == (0 if up and in_sync else 3)
    assert '"in_sync"' in capsys.readouterr().out


def test_status_help_says_its_exit_codes() -> None:
    text = _subparsers(cli.get_parser()).choices["status"].format_help()
    assert "is-active" in text and "exit status:" in text
    for code, _ in runtime_cli.EXIT_CODES:
        assert f"\n  {code} " in text, code


def test_replay_names_every_verdict_the_programs_return() -> None:
    """The bpf mode's redirects are named, not printed as `return 7`."""
    assert verdict_name(7, xdp=False) == "TC_ACT_REDIRECT"
    assert verdict_name(3, xdp=True) == "XDP_TX"
    assert (verdict_name(2, xdp=False), verdict_name(2, xdp=True)) == ("TC_ACT_SHOT", "XDP_PASS")
    assert verdict_name(99, xdp=False) == "return 99"


# --- the man page ------------------------------------------------------------------------------


def _rendered_man(tmp_path: Path) -> str:
    page = tmp_path / "bpfgen.1"
    page.write_text(man_page())
    groff = shutil.which("groff")
    if groff is None:  # no renderer here: the roff source, its escapes removed
        return page.read_text().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")
    done = subprocess.run([groff, "-man", "-Tascii", "-P-cbou", "-wall", str(page)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stderr == "", done.stderr
    return done.stdout


def test_man_page_renders_every_command_and_option(tmp_path: Path) -> None:
    text = _rendered_man(tmp_path)
    flat = " ".join(text.split())
    for name, sub in _subparsers(cli.get_parser()).choices.items():
        assert f"BPFGEN {name.upper()}" in text, name
        assert f"bpfgen {name} " in flat, name
        for option in _options(sub):
            assert option in flat, (name, option)
    for code, _ in runtime_cli.EXIT_CODES:
        assert re.search(rf"^\s*{code}\b", text, re.MULTILINE), code
    for var, _ in ENVIRONMENT:
        assert var in text
    assert "{" + ",".join(BUILD_KINDS) + "}" in flat


def test_man_page_is_deterministic() -> None:
    assert man_page() == man_page()
    assert man_page().startswith('.TH BPFGEN 1 "" "bpfgen ')


# --- completions -------------------------------------------------------------------------------


def _complete(script: Path, *words: str) -> list[str]:
    """What bash's completion function offers for the last of `words` (being typed)."""
    line = " ".join(["bpfgen", *words])
    quoted = " ".join(f'"{w}"' for w in words)
    prog = (f'source "{script}"; COMP_WORDS=(bpfgen {quoted}); COMP_CWORD={len(words)}; '
            f'COMP_LINE="{line}"; COMP_POINT={len(line)}; '
            '_shtab_bpfgen; printf "%s\\n" "${COMPREPLY[@]}"')  # fmt: skip
    done = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_is_valid_and_completes(tmp_path: Path) -> None:
    script = tmp_path / "bpfgen.bash"
    script.write_text(completion("bash"))
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert _complete(script, "") == COMMANDS
    assert _complete(script, "compile", "--build", "") == list(BUILD_KINDS)
    assert _complete(script, "sync", "d", "--se") == ["--services"]
    assert "--no-ipvs" not in _complete(script, "up", "d", "--")


def test_zsh_completion_names_every_command() -> None:
    script = completion("zsh")
    assert script.startswith("#compdef bpfgen")
    for name in COMMANDS:
        assert f"{name}:" in script or f'"{name}' in script, name
