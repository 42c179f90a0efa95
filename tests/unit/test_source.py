"""The line-tracking reader under the config stage (bpfgen/inputs/source.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bpfgen.inputs import source
from bpfgen.inputs.source import Map, Node, ParseError, Scalar, Seq, parse_text, read_source


def plain(node: Node) -> object:
    """The tree as Python values, with each scalar as (value, line)."""
    if isinstance(node, Map):
        return {k: (node.key_lines[k], plain(v)) for k, v in node.fields.items()}
    if isinstance(node, Seq):
        return [plain(item) for item in node.items]
    assert isinstance(node, Scalar)
    return (node.value, node.line)


def only(text: str) -> Node:
    (document,) = parse_text(text)
    return document.root


def test_yaml_lines_of_keys_and_values() -> None:
    root = only("a: 1\nb:\n  - x\n  -\n    c: yes\nd: 'no'\n")
    assert plain(root) == {
        "a": (1, (1, 1)),
        "b": (2, [("x", 3), {"c": (5, (True, 5))}]),
        "d": (6, ("no", 6)),
    }


def test_yaml_11_scalars_as_pyyaml_resolves_them() -> None:
    root = only("[0x4000, 010, 1_000, 1.5, ~, null, 'null', true, On, '80', 7440s, 2024-05-02]")
    assert isinstance(root, Seq)
    assert [n.value for n in root.items if isinstance(n, Scalar)] == [
        0x4000,
        8,
        1000,
        1.5,
        None,
        None,
        "null",
        True,
        True,
        "80",
        "7440s",
        "2024-05-02",
    ]


def test_keys_keep_their_text() -> None:
    root = only("1: a\nyes: b\nnull: c\n")
    assert isinstance(root, Map)
    assert list(root.fields) == ["1", "yes", "null"]


def test_duplicate_keys_are_kept_for_the_reader() -> None:
    root = only("a: 1\nb: 2\na: 3\n")
    assert isinstance(root, Map)
    assert root.duplicates == (("a", 3, 1),)


def test_json_lines_and_tabs() -> None:
    root = only('{\n\t"a": [1,\t2.5],\n\t"b": {"c": "x\\u00e9\\n"}\n}\n')
    assert plain(root) == {
        "a": (2, [(1, 2), (2.5, 2)]),
        "b": (3, {"c": (3, ("x\u00e9\n", 3))}),
    }


def test_flow_yaml_starting_with_a_brace_is_still_yaml() -> None:
    assert plain(only("{a: 1, b: [x]}")) == {"a": (1, (1, 1)), "b": (1, [("x", 1)])}


def test_aliases_are_shared_not_copied() -> None:
    root = only("a: &x {k: v}\nb: *x\nc: [*x, *x]\n")
    assert isinstance(root, Map)
    c = root.fields["c"]
    assert isinstance(c, Seq)
    assert root.fields["a"] is root.fields["b"] is c.items[0] is c.items[1]


def test_merge_keys_explicit_keys_win() -> None:
    root = only("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n")
    assert isinstance(root, Map)
    m = root.fields["m"]
    assert isinstance(m, Map)
    assert {k: v.value for k, v in m.fields.items() if isinstance(v, Scalar)} == {"x": 1, "y": 3}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "a: [1\nb: 2\n",
            2,
            "invalid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence at line 1)",
        ),
        ("a: &x [*x]\n", 1, "invalid YAML: alias 'x' refers to itself"),
        ("a: *y\n", 1, "invalid YAML: found undefined alias 'y'"),
        (
            "a: !!python/name:os.system x\n",
            1,
            "unsupported YAML tag 'tag:yaml.org,2002:python/name:os.system'",
        ),
        ("? [a]\n: 1\n", 1, "a mapping key must be a string"),
        ('{"a": 1\n\n', 3, "invalid JSON: expected ',' or '}'"),
        ("[" * 600, 1, "invalid JSON: nested more than 500 levels deep"),
        (
            "a:\n" + "".join(" " * i + "- \n" for i in range(1, 600)),
            501,
            "nested more than 500 levels deep",
        ),
    ],
)
def test_parse_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_text(text)
    assert (raised.value.line, raised.value.message) == (line, message)


def test_same_tree_without_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parents[2] / "examples" / "services.yaml").read_text()
    fast = plain(only(text))
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    assert plain(only(text)) == fast


def test_read_source_errors(tmp_path: Path) -> None:
    missing = read_source(tmp_path / "missing.yaml")
    assert missing.error == source.SourceError(1, "cannot read: No such file or directory")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: \xc3(\n")
    assert read_source(bad).error == source.SourceError(2, "not UTF-8 text (byte 0xc3 at offset 8)")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffa: 1\n".encode())
    loaded = read_source(bom)
    assert loaded.error is None and loaded.data.startswith(b"\xef\xbb\xbf")
    assert plain(loaded.documents[0].root) == {"a": (1, (1, 1))}
