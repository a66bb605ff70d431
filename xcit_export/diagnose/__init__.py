"""Stage: where the accuracy went (``--explain``): per-point error of every target against PyTorch.

Modules, one job each: :mod:`.points` (the model's block boundaries, by PyTorch module path),
:mod:`.reference` (PyTorch at those points, by hooks), :mod:`.locate` (the FP32 ONNX tensor of each
point, by value), :mod:`.mark` (the points as outputs of each target's own graph, marked or cut),
:mod:`.compare` (figures per point), :mod:`.explain` (the ``divergence`` record of a target),
:mod:`.remedy` (the blamed points as each backend's options), :mod:`.preflight` (FP16 range
checks before an FP16 build), :mod:`.faults` (planted faults, for tests and the worked example).
"""
