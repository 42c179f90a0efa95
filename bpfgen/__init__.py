"""bpfgen: node Service/SNAT config -> specialized, verified eBPF."""
__version__ = "0.1.0"
