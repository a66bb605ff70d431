"""The PyTorch reference at every point, by forward hooks on the model that was exported.

Hooks observe and never change a value (each returns None), so the reference's final outputs
are bit-identical with and without them; :func:`capture` checks that too by returning the model's
outputs beside the points.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .points import Point


def _tensor_of(value):
    """The first tensor of a hook's value (ConvPatchEmbed returns ``(tokens, (Hp, Wp))``)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return _tensor_of(value[0])
    return None


def capture(model, x: np.ndarray, points: Sequence[Point]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Run ``model`` on the batch ``x`` with a hook at every point; returns ``({module: array}, outputs)``.

    Only points the forward pass reached are returned (in ``points``' order); a hook that fires
    twice (a module called twice) keeps the first call, which is the forward order's.
    """
    import torch

    modules = dict(model.named_modules())
    seen: dict[str, np.ndarray] = {}
    handles = []

    def keep(point: Point):
        def hook(_module, args, output=None):
            value = _tensor_of(args if point.where == "input" else output)
            if value is not None and point.module not in seen:
                seen[point.module] = value.detach().to(torch.float32).numpy().copy()
        return hook

    try:
        for point in points:
            module = modules.get(point.hook)
            if module is None:
                continue
            if point.where == "input":
                handles.append(module.register_forward_pre_hook(keep(point)))
            else:
                handles.append(module.register_forward_hook(keep(point)))
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(x)))
    finally:
        for handle in handles:
            handle.remove()
    outs = out if isinstance(out, (tuple, list)) else (out,)
    ordered = {p.module: seen[p.module] for p in points if p.module in seen}
    return ordered, [o.numpy() for o in outs]
