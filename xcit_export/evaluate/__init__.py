"""Evaluation: comparison with PyTorch and latency (validate), per-op profiles, ``--target auto``."""
