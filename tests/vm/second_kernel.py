"""What the 6.1 VM runs of the host's kernel suites: what depends on the kernel.

Under TCG each test costs 10-50x its host time, so the second kernel of the matrix
runs what a different kernel can change, not the whole suite again (docs/testing.md,
"The second kernel"):
- the verifier: every program of every build kind and hook, the random-config
  properties of both modes, the runtime's loader (libbpf against this kernel);
- the helpers' semantics: both reference models' equivalence properties, their case
  tables on one build per kind (tests/bpf_inputs.py VM_BUILDS), one state machine each;
- the datapath on real sockets: the bpf mode's basic end-to-end cases in namespaces,
  tc, XDP and the socket programs (the ipvs mode's are tests/vm/guest_ipvs.py).
Everything else is the same code on any kernel (parsing, planning, rendering, the
runtime's bookkeeping, long load runs) and runs on the host only.
"""

from __future__ import annotations

SECOND_KERNEL: tuple[str, ...] = (
    # the verifier
    "tests/build/test_bpf_mode.py::test_small_config_verifies",
    "tests/build/test_bpf_mode.py::test_socket_lb_programs_verify",
    "tests/build/test_bpf_mode.py::test_socket_lb_with_frontends_in_maps_verifies",
    "tests/build/test_bpf_mode.py::test_maglev_without_any_backend_compiles",
    "tests/build/test_bpf_mode.py::test_maglev_over_the_rodata_budget_goes_to_a_map",
    "tests/build/test_bpf_mode.py::test_more_frontends_than_inline_limit_use_maps",
    "tests/build/test_bpf_mode.py::test_xdp_uplink_runs_svc_xdp",
    "tests/build/test_bpf_mode.py::test_random_bpf_configs_compile_and_verify",
    "tests/build/test_compile.py::test_example_compiles_and_verifies",
    "tests/build/test_compile.py::test_generic_build_reads_config_at_run_time",
    "tests/build/test_frozen.py::test_frozen_build_compiles_verifies_and_prunes",
    "tests/build/test_frozen.py::test_frozen_build_is_verified_with_its_own_rodata",
    "tests/build/test_compile_properties.py::test_random_configs_compile_and_verify",
    "tests/kernel/test_runtime_loader.py",
    # the helpers' semantics
    "tests/kernel/test_model_equivalence.py",
    "tests/kernel/test_model_equivalence_bpf.py",
    "tests/kernel/test_model_cases.py",
    "tests/kernel/test_model_cases_bpf.py",
    "tests/kernel/test_bpf_mode_cases.py",
    "tests/stateful/test_snat_machine.py::TestSnatSpecialized",
    "tests/stateful/test_svc_machine.py::TestSvcGeneric",
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
)
