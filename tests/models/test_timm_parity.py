"""Our reference XCiT vs timm's implementation, same state dict, every zoo variant.

timm is installed by ``make setup`` without its dependencies (torchvision cannot be installed beside
torch 2.13 here); ``tools/timm_parity.py`` stubs the torchvision import, which XCiT never uses.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from xcit_export.models.zoo import MODELS

if importlib.util.find_spec("timm") is None:
    pytest.skip("timm is not installed (make setup installs it as a test oracle)", allow_module_level=True)

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())  # the repository
_spec = importlib.util.spec_from_file_location("timm_parity", ROOT / "tools" / "timm_parity.py")
timm_parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(timm_parity)


@pytest.fixture(scope="module")
def timm():
    return timm_parity.import_timm()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_timm(timm, name):
    assert timm_parity.compare(name, 32, timm) < 1e-4


def test_pretrained_weights_are_timms_default(timm):
    """``--weights pretrained`` fetches the Hugging Face repo timm.create_model(name, pretrained=True)
    would (the same cache entry), for every zoo model."""
    from timm.models import get_pretrained_cfg

    assert {n: s.hub_id for n, s in MODELS.items()} == {n: get_pretrained_cfg(n).hf_hub_id for n in MODELS}
