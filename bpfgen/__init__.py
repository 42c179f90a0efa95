"""bpfgen: node Service/SNAT config -> specialized, verified eBPF."""

# The one place the version is written: pyproject.toml reads it (dynamic), and
# bpfgen_runtime reports it from the installed metadata.
__version__ = "0.1.0"
