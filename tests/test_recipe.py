"""Recipes are checked before any work: unknown keys, wrong units, impossible combinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from xcit_export.errors import RecipeError
from xcit_export.recipe import load_recipe, to_run_options

RECIPES = Path(__file__).parents[1] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    recipe = load_recipe(path)
    config = to_run_options(recipe)
    assert config.targets and config.model == "xcit_nano_12_p16_224"
    assert set(config.thresholds) == set(config.targets)


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


BASE = '[model]\nname = "xcit_nano_12_p16_224"\n'


@pytest.mark.parametrize("body, message", [
    (BASE + '[export]\nbatchsize = 1\n[targets.onnxruntime-fp32]\n', r"\[export\] batchsize: unknown key \(did you mean 'batch'\?\)"),
    (BASE + '[targets.onnxruntime-fp32]\nthreshold = { min_cosine = 0.9 }\n', r"\[targets.onnxruntime-fp32\] threshold: unknown key"),
    (BASE + '[targets.onnxruntime-fp32]\nlatency_budget = { median = "25ms" }\n', r"budgets are in milliseconds"),
    (BASE + '[targets.onnxruntime-fp32]\nlatency_budget = { median_ms = "25ms" }\n', r"must be a number of milliseconds, got the string '25ms'"),
    (BASE + '[targets.onnxruntime-fp32]\nthresholds = { min_top1_agreement = 99.5 }\n', r"is a fraction between 0 and 1"),
    # a drop of 1 or more is refused as points (issue 29), never read as 100 points
    (BASE + '[data]\neval = "demo"\n[targets.onnxruntime-fp32]\nthresholds = { max_top1_drop = 1 }\n',
     r"max_top1_drop=1.0 is read as a fraction \(100 points\); for 1 point pass 0.01"),
    (BASE + '[targets]\nauto = true\n[auto]\nmax_top1_drop = 1\n', r"\[auto\] max_top1_drop: max_top1_drop=1 is read as a fraction"),
    (BASE + 'weights = "pretrained"\n[targets.onnxruntime-int8]\n',
     r"\[targets.onnxruntime-int8\]: needs calibration images for weights 'pretrained'; set \[data\] calib"),
    (BASE + '[latency]\nthreads = 0\n[targets.onnxruntime-fp32]\n', r"\[latency\] threads: option threads=0 is out of range: it must be >= 1"),
    (BASE + '[data]\neval_count = -3\n[targets.onnxruntime-fp32]\n', r"\[data\] eval_count: option eval_count=-3 is out of range"),
    (BASE + '[model]\n' if False else BASE + 'seed = -5\n[targets.onnxruntime-fp32]\n', r"\[model\] seed: option seed=-5 is out of range: it must be >= 0"),
    (BASE + '[targets.onnxruntime-fp32]\nthresholds = { max_top1_drop = 0.01 }\n', r"needs a labelled evaluation set"),
    (BASE + '[export]\noutput = "tokens"\n[targets.onnxruntime-fp32]\nthresholds = { min_top1_agreement = 0.9 }\n',
     r"exports no logits; use min_cosine"),
    (BASE + '[export]\nbatch = 1\n[latency]\nbatch_sweep = [1, 8]\n[targets.onnxruntime-fp32]\n', r"is static"),
    (BASE + '[data]\neval = "demo"\n[targets.onnxruntime-fp32]\nthresholds = { max_top1_drop = 1 }\n',
     r"max_top1_drop=1.0 is read as a fraction \(100 points\); for 1 point pass 0.01"),
    (BASE + '[targets.onnxruntime-fp33]\n', r"unknown target 'onnxruntime-fp33'"),
    (BASE + '[targets.onnxruntime-fp32]\noptions = { device = "GPU" }\n', r"does not take option\(s\) device"),
    ('[model]\nweights = "random"\n[targets.onnxruntime-fp32]\n', r"\[model\] name: is required"),
    (BASE, r"list at least one target"),
    (BASE + '[model.extra]\n', r"unknown key"),
    ("this is = not toml [", r"is not valid TOML"),
])
def test_bad_recipes_name_file_and_key(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(RecipeError, match=message) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_int8_recipe_with_random_weights_calibrates_on_the_demo_set_by_default(tmp_path):
    config = to_run_options(load_recipe(write(tmp_path, BASE + '[targets.onnxruntime-int8]\n')))
    assert config.weights == "random" and config.calib is None  # the plan falls back to 'demo' and the report says so


def test_missing_recipe(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_recipe_folder(tmp_path):
    path = write(tmp_path, BASE + 'weights = "ckpt/w.pth"\n[data]\ncalib = "imgs"\n'
                                  '[targets.onnxruntime-int8]\n')
    config = to_run_options(load_recipe(path))
    assert config.weights == str(tmp_path / "ckpt/w.pth") and config.calib == str(tmp_path / "imgs")


def test_the_auto_budget_refuses_a_drop_given_in_points(tmp_path):
    """--max-top1-drop 1 / [auto] max_top1_drop = 1 would be a 100-point budget: refused before any
    work, with the same guard and words as a target's max_drop."""
    from xcit_export.errors import XcitExportError
    from xcit_export.evaluate.auto import Budget

    with pytest.raises(XcitExportError, match=r"max_top1_drop=1 is read as a fraction \(100 points\)"):
        Budget(max_top1_drop=1).check()
    path = write(tmp_path, BASE + '[data]\neval = "demo"\n[targets]\nauto = true\n[auto]\nmax_top1_drop = 1\n')
    with pytest.raises(RecipeError, match=r"\[auto\] max_top1_drop: max_top1_drop=1 is read as a fraction \(100 points\); "
                                          r"for 1 point pass 0.01"):
        load_recipe(path)
    assert Budget(max_top1_drop=0.5).check().max_top1_drop == 0.5
