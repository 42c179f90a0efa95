"""The datapath's drop discipline: every drop returns through bpfgen_drop() with a
named reason, and every reason is a counter of the manifest and of the models.

Read from the templates' text: a static rule over every program of both modes,
whatever a given plan compiles in.
"""

from __future__ import annotations

import re
from importlib import resources

from bpfgen.plan import BPF_COUNTER_NAMES, COUNTER_NAMES
from bpfgen.refmodel.bpf_svc import SVC_COUNTER_NAMES
from bpfgen.refmodel.ipvs_snat import COUNTER_NAMES as MODEL_COUNTER_NAMES

TEMPLATES = resources.files("bpfgen.templates")
#: A drop verdict as the value of a return (or of a ternary's branch).
RETURNED_DROP = re.compile(r"(\breturn|\?|:)\s*\b(BPFGEN_DROP|TC_ACT_SHOT|XDP_DROP)\b(?!_)")


def sources() -> dict[str, str]:
    out = {}
    for sub in ("include", "programs"):
        for f in sorted((TEMPLATES / sub).iterdir(), key=lambda t: t.name):
            if f.name.endswith((".h", ".j2")):
                out[f"{sub}/{f.name}"] = f.read_text(encoding="utf-8")
    return out


def enumerators(enum: str) -> list[str]:
    """The enumerators of `enum <name>` in bpfgen_types.h, in order, without *_MAX."""
    text = (TEMPLATES / "include" / "bpfgen_types.h").read_text(encoding="utf-8")
    body = re.search(rf"enum {enum} {{(.*?)}};", text, re.S)
    assert body, enum
    names = re.findall(r"^\s*(BPFGEN_\w+)", re.sub(r"/\*.*?\*/", "", body[1], flags=re.S), re.M)
    return [n for n in names if not n.endswith("_MAX")]


def counter_name(enumerator: str) -> str:
    """BPFGEN_EVT_PASS -> pass, BPFGEN_DROP_REWRITE -> drop_rewrite, BPFGEN_SVC_RDNAT -> rdnat."""
    return re.sub(r"^BPFGEN_(EVT_|SVC_)?", "", enumerator).lower()


def test_counter_names_are_the_c_enums() -> None:
    ipvs = [
        counter_name(e) for e in enumerators("bpfgen_event") + enumerators("bpfgen_drop_reason")
    ]
    svc = [counter_name(e) for e in enumerators("bpfgen_svc_counter")]
    assert list(COUNTER_NAMES) == ipvs == list(MODEL_COUNTER_NAMES)
    assert list(BPF_COUNTER_NAMES) == ipvs + svc == list(SVC_COUNTER_NAMES)


def test_drop_reasons_are_named_drop() -> None:
    reasons = enumerators("bpfgen_drop_reason") + [
        e for e in enumerators("bpfgen_svc_counter") if e.startswith("BPFGEN_SVC_DROP_")
    ]
    assert reasons
    assert all(counter_name(r).startswith("drop_") for r in reasons)
    drops = {n for n in BPF_COUNTER_NAMES if n.startswith("drop_")}
    assert drops == {counter_name(r) for r in reasons}


def test_every_drop_goes_through_bpfgen_drop() -> None:
    """Outside the ctx headers' definitions and bpfgen_drop() itself, no template
    returns a drop verdict: a drop without a counter is invisible in `bpfgen status`."""
    bare = []
    for path, text in sources().items():
        in_drop = False
        for n, line in enumerate(text.splitlines(), 1):
            if re.match(r"static __always_inline int bpfgen_drop\(", line):
                in_drop = True
            elif in_drop and line.startswith("}"):
                in_drop = False
            elif RETURNED_DROP.search(line) and not in_drop:
                bare.append(f"{path}:{n}: {line.strip()}")
    assert bare == []


def test_every_reason_passed_to_bpfgen_drop_is_a_drop_reason() -> None:
    reasons = set(enumerators("bpfgen_drop_reason")) | {
        e for e in enumerators("bpfgen_svc_counter") if e.startswith("BPFGEN_SVC_DROP_")
    }
    named = {
        m for text in sources().values() for m in re.findall(r"\bbpfgen_drop\((BPFGEN_\w+),", text)
    }
    assert named and named <= reasons
