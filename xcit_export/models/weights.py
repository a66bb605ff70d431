"""Weights: seeded random init, local checkpoints (timm or official format), timm's pretrained weights.

``pretrained`` is timm's default weights for the model (``timm/<model>.<tag>``'s
``model.safetensors`` on the Hugging Face Hub), fetched with ``huggingface_hub`` as timm fetches
them: into the shared Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``; a file timm already
downloaded is not fetched again), through ``HF_ENDPOINT`` (a mirror), with ``HF_TOKEN`` for gated
repos and resumable downloads; with ``HF_HUB_OFFLINE=1`` only the cache is read.

Checkpoints are loaded strictly: every key must match, or the error lists what is missing and
unexpected. Two on-disk layouts are accepted and normalised to timm's:

* timm (``state_dict`` at top level, ``.pth`` or ``.safetensors``);
* official facebookresearch/xcit (``{'model': state_dict}``), which differs in two ways that
  :func:`official_to_timm` undoes: the positional encoder is called ``pos_embeder`` and class
  attention stores one fused ``qkv`` Linear (timm splits it into ``q``, ``k``, ``v`` because only
  the class token needs a query).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..errors import CheckpointError, WeightsDownloadError
from .zoo import ModelSpec, build_model

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# The bundled fixture (``--weights demo``): xcit_nano_12_p16_224 trained on the bundled demo set.
DEMO_MODEL = "xcit_nano_12_p16_224"
DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "xcit_nano_12_p16_224_demo10.safetensors"
# The file timm reads from a ``timm/...`` repo (timm's HF_SAFE_WEIGHTS_NAME).
HUB_FILENAME = "model.safetensors"


def official_to_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official facebookresearch/xcit keys -> timm keys (split class-attention qkv, rename)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("pos_embeder."):
            out["pos_embed." + key[len("pos_embeder."):]] = value
        elif key.startswith("cls_attn_blocks.") and ".attn.qkv." in key:
            prefix, kind = key.rsplit(".qkv.", 1)  # kind: weight | bias
            parts = value.reshape(3, -1, *value.shape[1:])
            for i, name in enumerate("qkv"):
                out[f"{prefix}.{name}.{kind}"] = parts[i].clone()
        else:
            out[key] = value
    return out


def timm_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm keys -> official facebookresearch/xcit keys (the inverse of :func:`official_to_timm`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("pos_embed."):
            out["pos_embeder." + key[len("pos_embed."):]] = value
        elif key.startswith("cls_attn_blocks.") and any(f".attn.{n}." in key for n in "qkv"):
            prefix, rest = key.split(".attn.", 1)
            name, kind = rest.split(".", 1)
            if name != "q":
                continue  # fused once, when the q part is met
            out[f"{prefix}.attn.qkv.{kind}"] = torch.cat(
                [state_dict[f"{prefix}.attn.{n}.{kind}"] for n in "qkv"], dim=0)
        else:
            out[key] = value
    return out


def _is_official(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("pos_embeder.") or (k.startswith("cls_attn_blocks.") and ".attn.qkv." in k)
               for k in state_dict)


def check_checkpoint_path(weights: str) -> None:
    """Refuse a ``--weights`` checkpoint path that cannot be read (missing, a folder, a wrong suffix),
    naming it; ``random``, ``demo`` and ``pretrained`` pass. A run calls it before any work."""
    if weights in ("random", "demo", "pretrained"):
        return
    path = Path(weights)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist: pass --weights PATH to a .pth or "
                              f".safetensors file, 'random', or 'pretrained'")
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a folder, not a file: point --weights at the "
                              f".pth or .safetensors file inside it")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"checkpoint '{path}' has suffix '{path.suffix}'; expected one of "
                              f"{', '.join(CHECKPOINT_SUFFIXES)}")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat timm-layout state dict (no model needed)."""
    path = Path(path)
    check_checkpoint_path(str(path))
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            # weights_only: a checkpoint is data; never execute pickled code from it.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parser failure means "not a checkpoint"
        raise CheckpointError(f"checkpoint '{path}' could not be read as a "
                              f"{'safetensors' if path.suffix == '.safetensors' else 'PyTorch'} file "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Is it a "
                              f"model checkpoint, and complete?") from None
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict", "model_ema"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint '{path}' holds no state dict of tensors (found "
                              f"{type(obj).__name__}); save it with torch.save(model.state_dict(), path)")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if _is_official(state):
        state = official_to_timm(state)
    return state


def _resample_pos_embed(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A learned position table (ViT) trained at another input size is resized bicubically.

    Same method as timm's ``resample_abs_pos_embed``: the class-token row is kept, the patch grid
    is interpolated. XCiT's Fourier encoding needs nothing: it is computed for any grid.
    """
    key = "pos_embed"
    if key not in state or key not in expected or state[key].shape == expected[key].shape:
        return state
    old, new = state[key], expected[key]
    if old.ndim != 3 or old.shape[-1] != new.shape[-1]:
        return state  # left to the shape check, which names the tensor
    old_grid, new_grid = int(round((old.shape[1] - 1) ** 0.5)), int(round((new.shape[1] - 1) ** 0.5))
    if old_grid**2 != old.shape[1] - 1 or new_grid**2 != new.shape[1] - 1:
        return state
    grid = old[:, 1:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).float()
    grid = torch.nn.functional.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    resized = torch.cat([old[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, new_grid**2, -1)], dim=1)
    return {**state, key: resized.to(old.dtype)}


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                           spec: ModelSpec) -> None:
    """Load ``state`` into ``model``; any key or shape mismatch raises a :class:`CheckpointError`."""
    expected = model.state_dict()
    state = _resample_pos_embed(state, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if "head.weight" in state and "head.weight" in expected:
        got = state["head.weight"].shape[0]
        if got != spec.num_classes:
            raise CheckpointError(
                f"checkpoint '{source}' has {got} classes but the model is built with "
                f"{spec.num_classes}: pass --num-classes {got}")
    if "head.weight" in state and spec.num_classes == 0:
        raise CheckpointError(f"checkpoint '{source}' has a {state['head.weight'].shape[0]}-class head but "
                              f"the model is a feature extractor (--num-classes 0); use the classifier's "
                              f"class count")
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        raise CheckpointError(
            f"checkpoint '{source}' does not match {spec.name}: "
            f"{len(missing)} missing key(s) [{show(missing)}], "
            f"{len(unexpected)} unexpected key(s) [{show(unexpected)}]. "
            f"Is it a checkpoint of this model variant?")
    bad_shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad_shapes:
        raise CheckpointError(f"checkpoint '{source}' has tensors of the wrong shape for {spec.name}: "
                              + "; ".join(bad_shapes[:5]) + ". Is it a checkpoint of this model variant?")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def download_pretrained(spec: ModelSpec) -> Path:
    """The path of timm's pretrained weights for ``spec`` in the Hugging Face cache, downloaded
    there first if needed (``huggingface_hub.hf_hub_download``; its environment variables apply).

    Any failure is one :class:`WeightsDownloadError` sentence naming the repository, why, and what
    to do (with no network: a checkpoint file as ``--weights PATH``).
    """
    if spec.hub_id is None:
        raise WeightsDownloadError(f"{spec.name} has no published pretrained weights; pass --weights PATH")
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)

    from ..version import __version__

    where = f"{constants.ENDPOINT}/{spec.hub_id}"
    head = f"could not download pretrained weights for {spec.name}"
    fix = "pass a checkpoint file as --weights PATH"
    try:
        path = hf_hub_download(spec.hub_id, HUB_FILENAME, library_name="xcit-export", library_version=__version__)
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        if constants.HF_HUB_OFFLINE or isinstance(exc, OfflineModeIsEnabled):
            raise WeightsDownloadError(
                f"{head}: HF_HUB_OFFLINE is set and {spec.hub_id}/{HUB_FILENAME} is not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}); fetch it once with network (unset HF_HUB_OFFLINE) or {fix}") from None
        raise WeightsDownloadError(
            f"{head} from {where} (no connection, and {HUB_FILENAME} is not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE}); with no network, set HF_ENDPOINT to a mirror or {fix}") from None
    except GatedRepoError:
        raise WeightsDownloadError(f"{head}: {where} is gated; accept its terms on the Hub and log in "
                                   f"(hf auth login, or set HF_TOKEN), or {fix}") from None
    except (RepositoryNotFoundError, EntryNotFoundError):
        raise WeightsDownloadError(f"{head}: {where} has no {HUB_FILENAME} (is HF_ENDPOINT a full mirror?); "
                                   f"{fix}") from None
    except Exception as exc:  # network, disk, HTTP: huggingface_hub raises many kinds; all mean "not fetched"
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise WeightsDownloadError(f"{head} from {where} ({type(exc).__name__}: {first}); {fix}") from None
    return Path(path)


def _pretrained_id(spec: ModelSpec) -> str:
    """What identifies the pretrained weights' content: the repository and the cached file's blob
    name, which huggingface_hub names after the file's hash (the LFS sha256); a repository that
    publishes new weights therefore gets new build keys."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.hub_id or "", HUB_FILENAME) if spec.hub_id else None
    path = Path(cached) if isinstance(cached, str) else download_pretrained(spec)
    return f"{spec.hub_id}:{Path(os.path.realpath(path)).name}"


def demo_metadata() -> dict:
    """What the bundled fixture was trained on (classes, data seed, command, accuracy)."""
    import json

    return json.loads(DEMO_CHECKPOINT.with_suffix(".json").read_text())


def default_num_classes(weights: str, model: str) -> int | None:
    """The class count implied by ``weights`` (only the bundled fixture implies one)."""
    if weights != "demo":
        return None
    if model != DEMO_MODEL:
        raise CheckpointError(f"--weights demo is the bundled {DEMO_MODEL} fixture; it does not fit {model}")
    return len(demo_metadata()["classes"])


def resolve_weights(weights: str) -> str:
    return str(DEMO_CHECKPOINT) if weights == "demo" else weights


def load_model(spec: ModelSpec, weights: str = "random", seed: int = 0) -> torch.nn.Module:
    """Build ``spec`` and fill its weights: ``'random'`` (seeded), ``'pretrained'``, ``'demo'``
    (the bundled fixture) or a checkpoint path."""
    torch.manual_seed(seed)
    model = build_model(spec)
    if weights == "random":
        return model
    if weights == "demo":
        default_num_classes(weights, spec.name)
    weights = resolve_weights(weights)
    path = download_pretrained(spec) if weights == "pretrained" else Path(weights)
    load_state_dict_strict(model, read_checkpoint(path), str(path), spec)
    return model.eval()


def weights_fingerprint(weights: str, seed: int, spec: ModelSpec | None = None) -> str:
    """A short content hash identifying the weights, for artifact reuse (``pretrained``: the Hub
    file's hash when ``spec`` is given)."""
    if weights == "pretrained" and spec is not None:
        return hashlib.sha256(f"pretrained:{_pretrained_id(spec)}".encode()).hexdigest()[:16]
    if weights in ("random", "pretrained"):
        return hashlib.sha256(f"{weights}:{seed}".encode()).hexdigest()[:16]
    h = hashlib.sha256()
    with open(resolve_weights(weights), "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]
