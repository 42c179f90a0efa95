"""Tests in a second kernel: Debian 12's 6.1 LTS kernel booted with virtme-ng (no KVM).

kernel.py fetches and unpacks the kernel package into the cache directory
(.vm/ at the top of the repository, or $BPFGEN_VM_DIR); run.py boots it and
runs a command inside; test_vm.py runs pytest suites inside it.
"""
