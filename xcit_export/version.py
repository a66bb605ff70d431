"""The package version, in a module of its own so that every module can read it without importing
the package's ``__init__`` (which loads the Python API lazily): no import cycle through it."""

__version__ = "0.1.0"
