"""Shared test configuration: hypothesis profiles, example paths, a private object cache,
the test order, and the 6.1 VM's suites started in the background (tests/vm/background.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# ci: deterministic and bounded (what .ci/run and `make test` use);
# dev: more examples, for local runs: HYPOTHESIS_PROFILE=dev make test.
# vm: the 6.1 VM's run of the same properties (tests/vm/test_vm.py): the second kernel's
# verifier and helpers on the first derandomized examples of `ci`; the host runs all 25.
_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", derandomize=True, max_examples=25, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("vm", derandomize=True, max_examples=2, **_COMMON)
# check: `make check`, the fast tier: the first derandomized examples only.
settings.register_profile("check", derandomize=True, max_examples=5, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _private_object_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or fill the user's ~/.cache/bpfgen. In the 6.1 VM, the host test
    session's cache when it hands it over (tests/vm/test_vm.py): clang's objects do not
    depend on the kernel, and every build is still verified by the guest's kernel (a
    cached build is re-verified on restore), but clang under emulation is not rerun."""
    shared = os.environ.get("BPFGEN_SHARED_CACHE_DIR")
    if shared and os.environ.get("BPFGEN_IN_VM"):
        os.environ["BPFGEN_CACHE_DIR"] = shared
        return
    os.environ["BPFGEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("bpfgen-cache"))


def _runs_late(item: pytest.Item) -> bool:
    """vm tests wait for VMs; tests/benchmarks compiles nothing the VM's suites need."""
    benchmarks = ROOT / "tests" / "benchmarks"
    return item.get_closest_marker("vm") is not None or item.path.parent == benchmarks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The VM's suites run in the background from the start and read the objects the
    host's tests compile (BPFGEN_SHARED_CACHE_DIR): the host runs what they run first,
    in the guest's order (tests/vm/second_kernel.py), so it stays ahead of the emulated
    guest; vm tests, which wait for VMs, and the benchmarks' smoke tests go last. A
    stable sort: the order within each group is pytest's."""
    from tests.vm.second_kernel import guest_order

    items.sort(key=lambda item: (_runs_late(item), guest_order(item.nodeid)))
    if os.environ.get("BPFGEN_IN_VM"):
        # A module may run part of its cases in the 6.1 VM (its `vm_keeps(item)`): the
        # rest are deselected there (not skipped: they ran on the host).
        keep = [i for i in items if getattr(i.module, "vm_keeps", lambda _: True)(i)]
        if len(keep) < len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in keep])
            items[:] = keep


@pytest.fixture(autouse=True)
def _one_cpu_for_the_models(request: pytest.FixtureRequest) -> Iterator[None]:
    """Kernel-against-model tests run BPF_PROG_TEST_RUN on the CPU the test is on. An
    LRU hash map (bpfgen_affinity_v4) keeps free entries per CPU, so a small one used
    from two CPUs evicts entries before it is full, which the models do not model: seen
    once in the 6.1 VM (test_case[specialized-random-affinity_per_service_port]). These
    tests stay on one CPU (a different one per xdist worker); others are left alone."""
    if request.node.path.parent.name not in ("kernel", "stateful"):
        yield
        return
    before = os.sched_getaffinity(0)
    cpus = sorted(before)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    os.sched_setaffinity(0, {cpus[int(worker or 0) % len(cpus)]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(autouse=True, scope="session")
def _vm_suites_in_background(
    request: pytest.FixtureRequest, _private_object_cache: None
) -> Iterator[None]:
    """Start every selected `vm_background` suite now (tests/vm/test_vm.py waits for it);
    stop what still runs when the session ends."""
    if os.environ.get("BPFGEN_IN_VM"):
        yield
        return
    from tests.vm import background

    for item in request.session.items:
        if isinstance(item, pytest.Function) and item.get_closest_marker("vm_background"):
            if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker would boot its own VM
                pytest.fail("the VM suites run without pytest -n (make test runs them)")
            background.start(item.callspec.id, item.callspec.params["suite"])
    yield
    background.stop_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A section per VM suite: its result, its place on the session's clock, its log."""
    if os.environ.get("BPFGEN_IN_VM"):
        return
    from tests.vm import background

    lines = background.summaries()
    if lines:
        terminalreporter.section("Debian 6.1 VM suites (run in the background)")
        for line in lines:
            terminalreporter.line(line)


@pytest.fixture
def example_node() -> Path:
    return EXAMPLES / "node.yaml"


@pytest.fixture
def example_services() -> Path:
    return EXAMPLES / "services.yaml"
