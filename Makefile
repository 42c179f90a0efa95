# bpfgen — the make targets are the interface (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BPFGEN := $(VENV)/bin/bpfgen
APT_PACKAGES := clang-19 clang-format-19 llvm-19 libbpf-dev libbpf1 bpftool iproute2 nftables conntrack \
	ethtool ipvsadm tcpdump kmod python3-venv \
	qemu-system-x86 busybox-static file udev python3-bpfcc linux-headers-amd64
# The second kernel of the test matrix: Debian 12's 6.1 LTS image, unpacked
# under .vm/ (not installed), booted with virtme-ng (pip, in the venv).
STAMP_VM := .vm/.setup.stamp
STAMP_APT := .setup-apt.stamp
STAMP_VENV := $(VENV)/.setup.stamp

.PHONY: setup constraints compile check test test-wheel test-vm test-model fault fuzz lint man completions clean golden bench-compile bench-insns bench-insns-bpf bench-ports bench-memory bench bench-quick

setup: $(STAMP_APT) $(STAMP_VENV) $(STAMP_VM)

# System packages: only what is missing is installed, so re-running is cheap.
$(STAMP_APT):
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing apt packages:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then echo "error: setup must run as root to install: $$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

# Versions pinned by constraints.txt; `make constraints` re-pins from the current venv.
# bpfgen/__init__.py holds the version, which the installed metadata copies.
$(STAMP_VENV): pyproject.toml constraints.txt bpfgen/__init__.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

constraints:
	@{ sed -n '/^#/p' constraints.txt; \
	   $(PY) -m pip freeze --all --exclude-editable --exclude pip --exclude bpfgen; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

$(STAMP_VM): $(STAMP_APT) $(STAMP_VENV)
	$(PY) -m tests.vm.kernel
	@touch $@

compile: setup
	$(BPFGEN) compile --node examples/node.yaml --services examples/services.yaml --out build/example

# The fast tier for everyday work (about 3 minutes here, no VM, no namespaces): lint,
# then unit, golden, build and the kernel suites on this host's kernel, on every core
# (pytest-xdist), hypothesis on the `check` profile (HYPOTHESIS_PROFILE overrides it), the
# compile fuzz test on 100 inputs (make test: 300; BPFGEN_FUZZ_N overrides it).
CHECK_TESTS := tests/unit tests/golden tests/build tests/kernel tests/stateful
check: lint
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-check} BPFGEN_FUZZ_N=$${BPFGEN_FUZZ_N:-100} \
		$(PY) -m pytest -q -n auto -m "not vm and not slow" \
		--durations=10 $(CHECK_TESTS)

# Everything: the host's suites, and the 6.1 VM's (run beside them, tests/vm/background.py).
test: setup
	$(PY) -m pytest

# Only the suites that run in Debian's 6.1 kernel under virtme-ng.
test-vm: setup
	$(PY) -m pytest -m vm tests/vm

# The wheel built from this tree, installed in a fresh venv, compiles examples/
# (tests/build/test_wheel.py, marked slow: make test runs it, make check does not).
test-wheel: setup
	$(PY) -m pytest -q tests/build/test_wheel.py

# The runtime's fault injection at every point (make test: a sample), bpf mode, host.
fault: setup
	BPFGEN_FAULT_ALL=1 $(PY) -m pytest -s tests/e2e/test_runtime_faults.py

lint: setup
	$(VENV)/bin/ruff check bpfgen runtime bench tests
	$(VENV)/bin/ruff format --check bpfgen runtime bench tests
	@mkdir -p build/typing && ln -sfn ../../runtime build/typing/bpfgen_runtime
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider tests/golden/test_format.py

# The man page and the bash/zsh completions, made from the CLI's parser (bpfgen/clidoc.py;
# completions need shtab, in the dev extra). Read it: man -l build/man/bpfgen.1.
man: setup
	$(PY) -m bpfgen.clidoc man --out build/man/bpfgen.1

# bash: source build/completions/bpfgen.bash (or copy it to
# /usr/share/bash-completion/completions/bpfgen); zsh: put _bpfgen on $fpath.
completions: setup
	$(PY) -m bpfgen.clidoc bash --out build/completions/bpfgen.bash
	$(PY) -m bpfgen.clidoc zsh --out build/completions/_bpfgen

test-model: setup
	$(PY) -m pytest tests/kernel/test_model_equivalence.py tests/kernel/test_model_cases.py tests/stateful

# The compile fuzz test (tests/build/test_fuzz_compile.py) with 3,000 inputs instead of
# make test's 300; FUZZ_SEED=n for other inputs.
fuzz: setup
	BPFGEN_FUZZ_N=$${FUZZ_N:-3000} BPFGEN_FUZZ_SEED=$${FUZZ_SEED:-13} \
		$(PY) -m pytest -q -s tests/build/test_fuzz_compile.py

golden: setup
	$(PY) -m tests.golden.regenerate

clean:
	rm -rf build .pytest_cache .hypothesis .mypy_cache .ruff_cache

bench-compile: setup
	$(PY) -m bench.compile

bench-insns: setup
	$(PY) -m bench.compile --insns

# The bpf mode's programs (svc_in, svc_xdp, sock_connect4), specialized vs generic vs frozen.
bench-insns-bpf: setup
	$(PY) -m bench.compile --insns --mode bpf

bench-ports: setup
	$(PY) -m bench.port_alloc

# Peak RSS and seconds of `bpfgen compile` by input shape (docs/testing.md "Memory");
# one case: make bench-memory MEMORY_ARGS="--case maglev-10k".
bench-memory: setup
	$(PY) -m bench.memory $(MEMORY_ARGS)

# The measured proof (README "Benchmarks"): every part, JSON + PNG + table under build/bench.
# One part: make bench BENCH_ARGS="--part packets".
bench: setup
	$(PY) -m bench --out build/bench $(BENCH_ARGS)

# The CI smoke variant: runs every part briefly, asserts nothing about speed.
bench-quick: setup
	$(PY) -m bench --quick --out build/bench-quick $(BENCH_ARGS)
