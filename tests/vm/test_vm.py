"""pytest suites run inside Debian 12's 6.1 LTS kernel (virtme-ng, no KVM), from the host.

Each suite is a list of pytest arguments run in the VM by tests.vm.run; it
passes when the inner pytest exits 0 and its JUnit XML shows tests ran and
none was skipped (a kernel test skipped in the VM is a failure). A VM that
cannot boot fails the test with the reason; it never skips. The suites start in
the background when the session starts (tests/vm/background.py) and run while
the host's tests do; their output is in build/test-logs/vm-<suite>.log.

    .venv/bin/python -m pytest -m vm tests/vm        # BPFGEN_VM_TIMEOUT=S per suite
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench._netns import loadgen_binary
from tests.vm import background
from tests.vm.guest_ipvs import compile_builds
from tests.vm.run import VMRun
from tests.vm.second_kernel import SECOND_KERNEL

pytestmark = pytest.mark.vm


def _ipvs_builds(results: Path) -> dict[str, str]:
    """The IPVS suite's builds and loadgen, compiled on the host (fast) into the results
    directory the guest shares; tests/vm/guest_ipvs.py reads them from its environment."""
    builds = compile_builds(results / "builds")
    env = {"BPFGEN_E2E_BUILDS": str(builds["main"].parent),
           "BPFGEN_E2E_LOADGEN": str(loadgen_binary(cache=results))}  # fmt: skip
    for key in ("BPFGEN_E2E_SHORT_CONNECTIONS", "BPFGEN_E2E_SHORT_SECONDS"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


# One boot of the 6.1 kernel (under TCG a boot, Python's imports and pytest's collection
# cost minutes) runs what needs that kernel, not everything again: see docs/testing.md,
# "The second kernel". BPFGEN_VM_TIMEOUT overrides the timeout.
SUITES: dict[str, background.Suite] = {
    "debian-6.1": background.Suite(
        args=("tests/vm/guest_ipvs.py", *SECOND_KERNEL),
        # 1,833 s measured beside the host's suites on this 2-core machine (its tests
        # 1,648 s): the timeout is there to catch a hang, not to time the run.
        timeout=2700.0,
        prepare=_ipvs_builds,
        # The VM is the session's long pole: one emulated CPU that cannot use a second
        # core, while the host's suites can. Ahead of them it ends sooner, and they
        # fill the rest of the machine (docs/testing.md, "Time").
        nice=-5,
        # One worker: with two (pytest-xdist, --dist loadfile) the VM took 841 s instead
        # of about 1,040, but the ipvs suite's load case on the defaults, sharing the
        # emulated CPUs with the other worker, saw stalls over 2 s and 2 connections of
        # 20,000 fail. A load case must not be made to pass by going easier on it.
        workers=1,
    ),
}


def junit_summary(path: Path) -> dict[str, object]:
    """{"tests", "failures", "errors", "skipped"} totals and the names of the bad cases."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals: dict[str, object] = {
        key: sum(int(s.get(key, 0)) for s in suites)
        for key in ("tests", "failures", "errors", "skipped")
    }
    # Names of the bad cases go under their own keys: "skipped" stays a count.
    # JUnit has no expected-failure element: pytest writes a (strict) xfail as
    # <skipped type="pytest.xfail">. It ran and failed as declared, so it is
    # counted under "xfailed", not as a skip (an XPASS of a strict one fails).
    bad: dict[str, list[str]] = {"failed": [], "skipped_cases": [], "xfailed_cases": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            bad["failed"].append(name)
        skipped = case.find("skipped")
        if skipped is not None:
            key = "xfailed_cases" if skipped.get("type") == "pytest.xfail" else "skipped_cases"
            bad[key].append(f"{name}: {skipped.get('message', '')}")
    totals["skipped"] = len(bad["skipped_cases"])
    totals["xfailed"] = len(bad["xfailed_cases"])
    totals.update(bad)
    return totals


def assert_vm_run_passed(run: VMRun, junit: Path) -> None:
    """The pytest run in the VM exited 0, ran tests, and skipped none."""
    where = f"(in {run.kernel}; results kept in {run.results})"
    assert junit.is_file(), f"pytest in the VM wrote no {junit.name}, exit {run.returncode} {where}"
    summary = junit_summary(junit)
    assert run.returncode == 0, f"pytest in the VM exited {run.returncode}: {summary} {where}"
    assert isinstance(summary["tests"], int) and summary["tests"] > 0, f"no test ran {where}"
    assert summary["skipped"] == 0, f"tests skipped in the VM: {summary['skipped']} {where}"


@pytest.mark.vm_background
@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
def test_suite_in_debian_6_1_vm(suite: background.Suite, request: pytest.FixtureRequest) -> None:
    if os.environ.get("BPFGEN_IN_VM"):
        pytest.fail("already inside the VM: run the vm tests on the host", pytrace=False)
    # Started in the background at the session's start (tests/conftest.py); here we wait.
    job = background.start(request.node.callspec.id, suite)
    job.wait()
    if job.run is None:
        pytest.fail(f"the Debian 6.1 VM could not run {list(suite.args)}: {job.error}\n"
                    f"(guest output: {job.log})", pytrace=False)  # fmt: skip
    assert_vm_run_passed(job.run, job.junit)
    shutil.rmtree(job.results, ignore_errors=True)
