"""The `inputs` stage: input files -> validated `model.Inputs`, or every problem.

`load_inputs(node_path, service_paths)` reads the node file (strict: unknown
keys are errors) and the Kubernetes manifests (lenient: only the fields bpfgen
uses are read, and those strictly), checks every value and the relations
between them, and returns the frozen model. When anything is wrong it raises
`InputError` with all problems of the run, node file first, each file in line
order: `file:line: path: message`.

Reading is in three passes: the node file (which gives the service CIDR,
NodePort range and node name the manifests are checked against), the
manifests object by object (Services, EndpointSlices; other kinds are noticed
and skipped), then the cross-object checks and the join of EndpointSlices to
Service ports. No input string reaches the model without matching a pattern
that excludes everything but the characters its kind of name allows.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from bpfgen.errors import InputError
from bpfgen.inputs.fields import Run
from bpfgen.inputs.manifests import Manifests
from bpfgen.inputs.node_file import NodeReader
from bpfgen.inputs.source import Source, parse_input, read_input
from bpfgen.model import Inputs

__all__ = ["load_inputs", "load_sources", "read_sources"]


def load_inputs(node_path: Path, service_paths: Sequence[Path], strict: bool = False) -> Inputs:
    """Read, validate and join the node file and the service manifests."""
    return load_sources(read_sources(node_path, service_paths), strict)


def read_sources(node_path: Path, service_paths: Sequence[Path]) -> list[Source]:
    """Each input's bytes, read once (source.read_input): the node file first."""
    return [read_input(path) for path in (node_path, *service_paths)]


def load_sources(sources: Sequence[Source], strict: bool = False) -> Inputs:
    """Parse, validate and join inputs already read: the node file first.

    What is valid Kubernetes but not served by bpfgen (an IPv6 address, an SCTP port,
    a ClusterIP of another ServiceCIDR, an external frontend another Service holds) is
    skipped object by object, each with a notice and an `Inputs.skipped` record; with
    `strict`, each is a problem instead."""
    with _gc_paused():
        return _load([parse_input(source) for source in sources], strict)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Reading builds millions of small acyclic objects: without the cyclic
    collector scanning them over and over, a 10 MB manifest loads twice as fast."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(sources: Sequence[Source], strict: bool) -> Inputs:
    run = Run([source.file for source in sources], strict)
    for index, source in enumerate(sources):
        if source.error is not None:
            run.problem(index, source.error.line, "", source.error.message)
    node, facts = NodeReader(run, sources[0]).read()
    manifests = Manifests(run, facts)
    for index, source in enumerate(sources[1:], start=1):
        manifests.read(index, source)
    services = manifests.finish()
    if run.has_problems() or node is None:
        raise InputError(run.sorted_problems())
    digest = hashlib.sha256()
    for source in sources:
        digest.update(len(source.data).to_bytes(8, "big"))
        digest.update(source.data)
    return Inputs(
        node=node,
        services=tuple(sorted(services, key=lambda s: (s.namespace, s.name))),
        notices=run.sorted_notices(),
        sha256=digest.hexdigest(),
        skipped=run.sorted_skipped(),
        node_sha256=hashlib.sha256(sources[0].data).hexdigest(),
    )
