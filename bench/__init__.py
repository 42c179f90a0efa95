"""`make bench`: the measured proof that specialization and the conntrack bypass pay.

One module per part; each exposes

    run(out_dir: Path, *, quick: bool, progress: Callable[[str], None]) -> dict
    table(result: dict) -> str          # Markdown, printed and pasted into README.md
    plot(result: dict, out_dir: Path) -> list[Path]   # PNGs (matplotlib, Agg)
    targets_table(result: dict) -> str  # optional: targets with pass/miss, printed last

and `python -m bench` (bench/__main__.py) runs the parts, writes
`results.json` with every raw figure, the PNGs and the tables. The standalone
measurements sit beside the parts: compile (make bench-compile, bench-insns),
port_alloc (make bench-ports), memory (make bench-memory) and maglev.

A package of the repository, not of the wheel: it imports bpfgen and
bpfgen_runtime, never the reverse, and runs from the repository's root.
"""
