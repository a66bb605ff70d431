"""The ONNX Runtime runner (CPU execution provider) and the FP32 target's build: the simplified ONNX itself."""

from __future__ import annotations

import shutil

import numpy as np

from ...errors import ArtifactError
from ..base import Artifact, BuildContext


def session_options(threads: int | None):
    """The runner's ``SessionOptions``: every graph optimisation, ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


class OnnxRuntimeRunner:
    """An ``onnxruntime.InferenceSession`` on the CPU EP; I/O by the graph's tensor names."""

    device = "CPU"

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        if not path.exists():
            raise ArtifactError(f"ONNX file '{path}' does not exist; rebuild the target")
        opts = session_options(threads)
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load '{path}': {str(exc).splitlines()[0][:300]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: x})

    def close(self) -> None:
        self.session = None


def build_copy(ctx: BuildContext, target: str) -> Artifact:
    """The FP32 artifact is the simplified ONNX, copied so the target folder is self-contained."""
    dst = ctx.out_dir / "model.onnx"
    shutil.copyfile(ctx.onnx_path, dst)
    return Artifact(target=target, path=dst, files=[dst], metadata={"precision": "fp32"})


def _build_fp32(ctx: BuildContext) -> Artifact:
    return build_copy(ctx, "onnxruntime-fp32")


def load(artifact: Artifact, threads: int | None = None, **_options) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(artifact.path, threads=threads)


def open_pool(artifact: Artifact, x: np.ndarray, streams: int | None = None, threads: int | None = None,
              **_options):
    """Concurrent ``run`` calls on one session (``Target.pool``; :mod:`.pool`); ``streams`` None:
    one per thread."""
    from .pool import OnnxRuntimePool

    return OnnxRuntimePool(artifact.path, x, session_options, streams=streams, threads=threads)
