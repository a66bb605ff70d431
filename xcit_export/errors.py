"""One exception tree for everything xcit-export reports to a user.

Every message says what failed, the offending value, and how to fix it. The CLI catches
:class:`XcitExportError` and prints its message without a traceback; anything else is a bug.
"""

from __future__ import annotations


class XcitExportError(Exception):
    """Root of all user-facing errors."""


class UnknownModelError(XcitExportError):
    """A model name that is not in the zoo."""


class UnknownTargetError(XcitExportError):
    """A target name that is not registered."""


class CheckpointError(XcitExportError):
    """A checkpoint file that is missing, unreadable, or does not fit the model."""


class WeightsDownloadError(XcitExportError):
    """Pretrained weights could not be downloaded."""


class ExportError(XcitExportError):
    """Tracing to ONNX, checking or simplifying failed."""


class ParityError(XcitExportError):
    """A converted model does not reproduce the PyTorch reference within tolerance."""


class OutputDirError(XcitExportError):
    """The output folder cannot be created or written."""


class DataError(XcitExportError):
    """An image set is empty, corrupt, or does not fit the model."""


class BackendUnavailableError(XcitExportError):
    """An optional backend library (OpenVINO, TensorRT, ModelOpt...) is not installed."""


class ArtifactError(XcitExportError):
    """A built artifact is missing, truncated, tampered with, or built for another device."""


class RecipeError(XcitExportError):
    """A recipe file has an unknown key or an impossible combination."""


class ReportError(XcitExportError):
    """A report or baseline file cannot be read or compared."""


class GateFailure(XcitExportError):
    """An accuracy or latency gate did not hold."""


class OutputDirBusyError(OutputDirError):
    """Another run holds the output folder's lock (and ``--no-wait`` was given)."""


class UsageError(XcitExportError):
    """Options that do not combine (e.g. ``auto`` with other targets); the CLI exits 2 on it."""


class BrokenReferenceError(XcitExportError):
    """The PyTorch reference itself gives outputs nothing can be compared against (NaN, inf)."""


class OptionError(UsageError):
    """An option value that does not parse or lies outside its range (``--eval-count -3``,
    ``-O onnxruntime-int8:per_channel=maybe``): refused before any work, exit 2."""
