"""Train the bundled demo checkpoint: xcit_nano_12_p16_224 with a 10-class head on the demo set.

The checkpoint is a test fixture: a real XCiT with weights that actually classify, so that
accuracy gates (FP32 vs INT8, ONNX vs PyTorch) measure something. It is trained from scratch on
the ``train`` split of :mod:`xcit_export.demo_data` and scored on the ``eval`` split at 224x224.

To fit ~30 minutes on two CPU cores, most epochs run at a low resolution (XCiT accepts any
multiple of 16; its Fourier positional encoding has no fixed grid), then a short fine-tune at
224 adapts it to the deployed input size. Every tensor comes from
:func:`xcit_export.data.preprocess` (with the input size changed for the low-resolution phase),
computed once up front.

Writes ``xcit_export/assets/xcit_nano_12_p16_224_demo10.safetensors`` (FP16, timm key layout) and
a JSON beside it with the class names, the data seed, this command line, the measured eval top-1
and the preprocessing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xcit_export.data import demo_root, list_image_folder, preprocess  # noqa: E402
from xcit_export.demo_data import CLASSES  # noqa: E402
from xcit_export.io import atomic_path, write_json_atomic  # noqa: E402
from xcit_export.zoo import build_model, get_spec  # noqa: E402

MODEL = "xcit_nano_12_p16_224"
DEFAULT_OUT = REPO / "xcit_export" / "assets" / f"{MODEL}_demo10.safetensors"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_split(root: Path, split: str, pp) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    paths, labels, names = list_image_folder(root / split)
    if tuple(names) != CLASSES:
        raise SystemExit(f"{root / split}: class folders {names} != {CLASSES}")
    x = np.empty((len(paths), 3, *pp.input_size), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            x[i] = preprocess(img, pp)
    return torch.from_numpy(x), torch.tensor(labels)


def augment(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and a random shift: all label-preserving for this data."""
    b, _, h, w = x.shape
    flip_h = torch.rand(b, generator=gen) < 0.5
    flip_v = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return xp[:, :, dy:dy + h, dx:dx + w]


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                  for i in range(0, len(x), batch))
    return correct / len(x)


def run_phase(model, opt, x, y, epochs, lr, warmup, batch, pad, gen, label_smoothing, x_eval, y_eval,
              name):
    """Train ``epochs`` epochs with linear warm-up then cosine decay to 1% of ``lr``."""
    steps_per_epoch = math.ceil(len(x) / batch)
    total = epochs * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        t0, loss_sum = time.time(), 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            warm = warmup * steps_per_epoch
            scale = (step + 1) / warm if step < warm else \
                0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            loss = F.cross_entropy(model(augment(x[idx], pad, gen)), y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            step += 1
        acc = evaluate(model, x_eval, y_eval)
        log(f"{name} epoch {epoch + 1}/{epochs}: loss {loss_sum / len(x):.3f}, eval top-1 {acc:.3f} "
            f"({time.time() - t0:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="demo data seed (and training seed)")
    parser.add_argument("--data", type=Path, default=None, help="demo data folder (default: the cache)")
    parser.add_argument("--low-res", type=int, default=112, help="input size of the main phase")
    parser.add_argument("--epochs", type=int, default=30, help="epochs at --low-res")
    parser.add_argument("--ft-epochs", type=int, default=2, help="fine-tune epochs at 224")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ft-lr", type=float, default=2e-4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    spec = get_spec(MODEL).with_overrides(num_classes=len(CLASSES))
    pp = spec.preprocessing
    pp_low = dataclasses.replace(pp, input_size=(args.low_res, args.low_res))

    t_start = time.time()
    root = demo_root(args.seed, args.data)
    log(f"data in {root}")
    x_low, y_train = load_split(root, "train", pp_low)
    xe_low, y_eval = load_split(root, "eval", pp_low)
    log(f"preprocessed {len(x_low)} train + {len(xe_low)} eval at {args.low_res}")

    model = build_model(spec)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "cls_token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    run_phase(model, opt, x_low, y_train, args.epochs, args.lr, 2, args.batch, args.low_res // 14, gen,
              args.label_smoothing, xe_low, y_eval, f"{args.low_res}px")
    del x_low, xe_low

    x_hi, _ = load_split(root, "train", pp)
    xe_hi, _ = load_split(root, "eval", pp)
    log(f"preprocessed train + eval at {pp.input_size}; eval top-1 before fine-tune "
        f"{evaluate(model, xe_hi, y_eval):.3f}")
    if args.ft_epochs:
        run_phase(model, opt, x_hi, y_train, args.ft_epochs, args.ft_lr, 0, args.batch, 16, gen,
                  args.label_smoothing, xe_hi, y_eval, "224px")

    # Score what is shipped: the FP16 weights, loaded back into an FP32 model.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in state.items()})
    top1 = evaluate(model, xe_hi, y_eval)
    log(f"eval top-1 at 224 (FP16 weights): {top1:.4f}")

    from safetensors.torch import save_file

    with atomic_path(args.out) as tmp:
        save_file(state, str(tmp), metadata={"model": MODEL, "num_classes": str(len(CLASSES))})
    command = "python tools/train_fixture.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    write_json_atomic(args.out.with_suffix(".json"), {
        "model": MODEL,
        "num_classes": len(CLASSES),
        "classes": list(CLASSES),
        "dataset": {"generator": "xcit_export.demo_data.make_demo_dataset", "seed": args.seed,
                    "train_split": "train", "eval_split": "eval", "eval_images": len(y_eval)},
        "eval_top1": round(top1, 4),
        "preprocessing": pp.to_dict(),
        "training": {"command": command.strip(), "low_res": args.low_res, "epochs": args.epochs,
                     "ft_epochs": args.ft_epochs, "lr": args.lr, "ft_lr": args.ft_lr, "batch": args.batch,
                     "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
                     "threads": args.threads, "wall_clock_s": round(time.time() - t_start)},
        "dtype": "float16",
    })
    for path in (args.out, args.out.with_suffix(".json")):
        path.chmod(0o644)  # the atomic temp file is created private; these are shipped files
    log(f"wrote {args.out} and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
