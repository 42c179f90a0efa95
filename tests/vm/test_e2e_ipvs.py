"""From the host: the IPVS end-to-end suite (tests/vm/guest_ipvs.py) inside the 6.1 VM.

The builds and the load case's loadgen binary are compiled on the host (fast) into
the run's results directory, which the guest shares read-write; the guest suite
brings them up, sends real traffic, and writes JUnit XML there. Fails, never skips,
when the VM cannot run.

    .venv/bin/python -m pytest -m vm tests/vm/test_e2e_ipvs.py -s
"""

from __future__ import annotations

import os
import shutil

import pytest

from bpfgen.bench._netns import loadgen_binary
from tests.vm.guest_ipvs import compile_builds
from tests.vm.run import VMError, new_results_dir, run_in_vm
from tests.vm.test_vm import assert_vm_run_passed

pytestmark = pytest.mark.vm

TIMEOUT = float(os.environ.get("BPFGEN_VM_E2E_TIMEOUT", "900"))


def test_ipvs_end_to_end_in_debian_6_1_vm() -> None:
    if os.environ.get("BPFGEN_IN_VM"):
        pytest.fail("already inside the VM: run the vm tests on the host", pytrace=False)
    results = new_results_dir()
    builds = compile_builds(results / "builds")
    loadgen = loadgen_binary(cache=results)  # the load case's client and server
    junit = results / "junit.xml"
    cmd = [
        "python", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "-rA",
        f"--junitxml={junit}", "tests/vm/guest_ipvs.py",
    ]  # fmt: skip
    env = {"BPFGEN_E2E_BUILDS": str(builds["main"].parent), "BPFGEN_E2E_LOADGEN": str(loadgen)}
    for key in ("BPFGEN_E2E_SHORT_CONNECTIONS", "BPFGEN_E2E_SHORT_SECONDS"):
        if key in os.environ:
            env[key] = os.environ[key]
    try:
        run = run_in_vm(cmd, TIMEOUT, results=results, env=env)
    except VMError as exc:
        pytest.fail(f"the Debian 6.1 VM could not run the IPVS suite: {exc}", pytrace=False)
    assert_vm_run_passed(run, junit)
    print(f"vm: boot {run.boot_seconds:.0f} s, total {run.total_seconds:.0f} s")
    shutil.rmtree(run.results, ignore_errors=True)
