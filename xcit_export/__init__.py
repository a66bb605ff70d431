"""xcit-export: XCiT image classifiers from PyTorch to edge runtimes, validated end to end."""

__version__ = "0.1.0"
