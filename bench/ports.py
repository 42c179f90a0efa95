"""Part 4 of `make bench`: SNAT port allocation quality against occupancy.

A wrapper of `bench.port_alloc` (its docstring has the method): for each SNAT
range size, the kernel's egress program allocates ports for new flows towards
one remote endpoint while a fixed share of that endpoint's port space is
occupied; measured success rate and mean probes are set against the theory of
independent uniform candidates (failure o^128, expected probes of a success).
Every attempt is also checked against the spec (first free candidate, exactly
128 probes); disagreements land in `problems` and fail the bench.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]

QUICK = {"ranges": (1024,), "occupancies": (0.5, 0.9, 0.99), "flows": 300}
SEED = 1


def run(out_dir: Path, *, quick: bool, progress: Progress) -> dict[str, Any]:
    from bench import port_alloc

    ranges = QUICK["ranges"] if quick else port_alloc.DEFAULT_RANGES
    occupancies = QUICK["occupancies"] if quick else port_alloc.DEFAULT_OCCUPANCIES
    flows = QUICK["flows"] if quick else port_alloc.DEFAULT_FLOWS
    assert isinstance(ranges, tuple) and isinstance(occupancies, tuple)
    assert isinstance(flows, int)
    progress(f"ports: {len(ranges)} ranges x {len(occupancies)} occupancies x {flows:,} new flows")
    levels = port_alloc.run(list(ranges), list(occupancies), flows, SEED, progress=False)
    for lv in levels:
        progress(
            f"ports: {lv.ports} ports, {lv.occupancy:.1%} occupied: {lv.success_rate:.3%} success"
        )
    return {
        "flows": flows,
        "seed": SEED,
        "probes_max": port_alloc.SNAT_PROBES,
        "levels": [lv.to_dict() for lv in levels],
        "problems": [
            f"{lv.ports} ports, {lv.occupancy:.1%}: {p}" for lv in levels for p in lv.problems
        ],
        "markdown": port_alloc.markdown(levels),
    }


def table(result: dict[str, Any]) -> str:
    text = str(result["markdown"])
    if result["problems"]:
        text += "\nSpec disagreements:\n" + "\n".join(f"- {p}" for p in result["problems"]) + "\n"
    return text


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.port_alloc import expected_probes, failure_odds

    fig, (ok_ax, probes_ax) = plt.subplots(1, 2, figsize=(11, 4))
    grid = [i / 1000 for i in range(0, 1000)]
    ok_ax.plot([100 * o for o in grid], [100 * (1 - failure_odds(o)) for o in grid], "k--",
               label="theory 1 - o^128")  # fmt: skip
    probes_ax.plot([100 * o for o in grid], [expected_probes(o) for o in grid], "k--",
                   label="theory")  # fmt: skip
    for ports in dict.fromkeys(lv["ports"] for lv in result["levels"]):
        mine = [lv for lv in result["levels"] if lv["ports"] == ports]
        occ = [100 * lv["occupied"] / lv["ports"] for lv in mine]
        ok_ax.plot(occ, [100 * lv["successes"] / lv["attempts"] for lv in mine], "o-",
                   label=f"measured, {ports:,} ports")  # fmt: skip
        with_probes = [(o, lv) for o, lv in zip(occ, mine, strict=True) if lv["mean_probes"]]
        probes_ax.plot([o for o, _ in with_probes], [lv["mean_probes"] for _, lv in with_probes],
                       "o-", label=f"measured, {ports:,} ports")  # fmt: skip
    ok_ax.set_xlabel("occupancy of one remote endpoint's port space (%)")
    ok_ax.set_ylabel("new flows that got a port (%)")
    ok_ax.set_title(f"SNAT allocation success ({result['flows']:,} flows per point)")
    probes_ax.set_xlabel("occupancy (%)")
    probes_ax.set_ylabel("mean probes of a success")
    probes_ax.set_yscale("log")
    probes_ax.set_title("Probes per new flow")
    for ax in (ok_ax, probes_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "ports.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
