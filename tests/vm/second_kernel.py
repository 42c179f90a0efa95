"""What the 6.1 VM runs of the host's kernel suites: what depends on the kernel.

Under TCG each test costs 10-50x its host time (measured: boot 41 s, pytest's
start and collection about 1 min, an e2e module's topology 60 s), so the second kernel of the matrix
runs what a different kernel can change, not the whole suite again (docs/testing.md,
"The second kernel"):
- the verifier: each shape of generated code in each build kind and hook
  (tests/build/test_verifier_matrix.py, built by the host, verified by the guest),
  the random-configuration properties of both modes;
- the helpers' semantics: both reference models' equivalence properties on one build
  kind per program, their case tables on one build per kind (tests/bpf_inputs.py
  VM_BUILDS), the kube-proxy conformance table on one build per mode, each row on
  one of them (the module's vm_keeps; tests/conftest.py deselects the rest);
- the datapath on real sockets: the bpf mode's basic end-to-end cases in namespaces,
  tc, XDP and the socket programs (the ipvs mode's are tests/vm/guest_ipvs.py);
- a node without a compiler: the runtime and the agent where clang and the headers
  are hidden, objects reused and verified by this kernel.
Everything else is the same code on any kernel (parsing, planning, rendering, the
runtime's bookkeeping, long load runs) and runs on the host only.
"""

from __future__ import annotations

SECOND_KERNEL: tuple[str, ...] = (
    # the verifier: each shape of generated code in each build kind, then random configs
    "tests/build/test_verifier_matrix.py",
    "tests/build/test_bpf_mode.py::test_random_bpf_configs_compile_and_verify",
    "tests/build/test_compile_properties.py::test_random_configs_compile_and_verify",
    # the helpers' semantics
    # one build kind per program (the kinds' code shapes are the matrix's business):
    # under TCG each kind's property cost 90-105 s at 6 examples
    "tests/kernel/test_model_equivalence.py::test_kernel_matches_model[generic]",
    "tests/kernel/test_model_equivalence_bpf.py::test_svc_matches_model[specialized-svc_in]",
    "tests/kernel/test_model_equivalence_bpf.py::test_svc_matches_model[frozen-svc_xdp]",
    "tests/kernel/test_model_cases.py",
    "tests/kernel/test_model_cases_bpf.py",
    # one build per mode in the guest; masqueradeAll's rows (another node) on the host only
    "tests/kernel/test_conformance.py::test_row",
    # the datapath on real sockets
    "tests/e2e/test_bpf_mode_host.py::test_up_attaches_svc_in_only_and_leaves_netfilter_alone",
    "tests/e2e/test_bpf_mode_host.py::test_pod_to_clusterip_keeps_pod_source",
    "tests/e2e/test_bpf_mode_host.py::test_external_to_nodeport_snats_to_node",
    "tests/e2e/test_bpf_mode_host.py::test_hairpin_pod_reaches_itself_snated",
    "tests/e2e/test_bpf_mode_host.py::test_icmp_echo_to_vip_answered",
    "tests/e2e/test_bpf_mode_host.py::test_frontend_without_backend_is_rejected",
    "tests/e2e/test_bpf_mode_xdp.py::test_xdp_program_is_native_on_the_veth",
    "tests/e2e/test_bpf_mode_xdp.py::test_nodeport_to_a_backend_behind_the_uplink_is_sent_back_at_xdp",
    "tests/e2e/test_bpf_mode_sock.py::test_tcp_to_clusterip_reaches_a_backend_shown_as_the_vip",
    "tests/e2e/test_bpf_mode_sock.py::test_udp_reply_comes_from_the_vip",
    # a node without clang or headers (issue 16): up/sync/status/down, and the agent
    "tests/e2e/test_no_compiler.py",
    "tests/e2e/test_agent.py::test_agent_without_a_compiler_follows_services",
)


def guest_order(nodeid: str) -> int:
    """Where the guest runs this test (its entry's index), len(SECOND_KERNEL) if it does
    not. The host runs them first in that order (tests/conftest.py): the guest reads
    their builds from the shared cache, and a miss costs it clang under emulation."""
    for index, entry in enumerate(SECOND_KERNEL):
        if nodeid == entry or nodeid.startswith((f"{entry}::", f"{entry}[")):
            return index
    return len(SECOND_KERNEL)
