"""Shared test configuration: hypothesis profiles, example paths, a private object cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# ci: deterministic and bounded (what .ci/run and `make test` use);
# dev: more examples, for local runs: HYPOTHESIS_PROFILE=dev make test.
# vm: the 6.1 VM's run of the same properties (tests/vm/test_vm.py): the second kernel's
# verifier and helpers on the first derandomized examples of `ci`; the host runs all 25.
_COMMON = {"deadline": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", derandomize=True, max_examples=25, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("vm", derandomize=True, max_examples=6, **_COMMON)
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


@pytest.fixture
def example_node() -> Path:
    return EXAMPLES / "node.yaml"


@pytest.fixture
def example_services() -> Path:
    return EXAMPLES / "services.yaml"
