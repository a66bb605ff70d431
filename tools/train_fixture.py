"""Train the bundled demo checkpoint: xcit_nano_12_p16_224 with a 10-class head on the demo set.

The checkpoint is a test fixture: a real XCiT with weights that actually classify, so that
accuracy gates (FP32 vs INT8, ONNX vs PyTorch) measure something. It is trained from scratch on
the ``train`` split of :mod:`xcit_export.data.demo` and scored on the ``eval`` split at 224x224.

To fit ~30 minutes on two busy CPU cores, training is progressive: most epochs run at a low
resolution (XCiT accepts any multiple of 16; its Fourier positional encoding has no fixed grid),
then fewer at higher ones, ending with a short fine-tune at 224 on a subset so the model sees
objects at the deployed pixel scale. One cosine learning-rate schedule spans all phases. Every
tensor comes from :func:`xcit_export.data.sets.preprocess` (with only the input size changed per
phase), computed once up front.

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

from xcit_export.data.sets import demo_root, list_image_folder, preprocess  # noqa: E402
from xcit_export.data.demo import CLASSES  # noqa: E402
from xcit_export.io import atomic_path, write_json_atomic  # noqa: E402
from xcit_export.models.weights import load_model  # noqa: E402
from xcit_export.models.zoo import build_model, get_spec  # noqa: E402

MODEL = "xcit_nano_12_p16_224"
DEFAULT_OUT = REPO / "xcit_export" / "assets" / f"{MODEL}_demo10.safetensors"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_split(root: Path, split: str, pps: list, limit: int | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Preprocess ``split`` once per preprocessing in ``pps`` (decoding each file once).

    ``limit`` keeps a class-balanced prefix: the demo files cycle through the classes.
    """
    from PIL import Image

    paths, labels, names = list_image_folder(root / split)
    if tuple(names) != CLASSES:
        raise SystemExit(f"{root / split}: class folders {names} != {CLASSES}")
    # Interleave classes (file i of every class, then i+1, ...) so any prefix is balanced.
    order = sorted(range(len(paths)), key=lambda i: (paths[i].name, labels[i]))[:limit]
    if not pps:
        return [], torch.tensor([labels[i] for i in order])
    xs = [np.empty((len(order), 3, *pp.input_size), dtype=np.float32) for pp in pps]
    for row, i in enumerate(order):
        with Image.open(paths[i]) as img:
            img.load()
            for x, pp in zip(xs, pps):
                x[row] = preprocess(img, pp)
    return [torch.from_numpy(x) for x in xs], torch.tensor([labels[i] for i in order])


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


class Schedule:
    """Linear warm-up, then one cosine decay (to 1% of the peak) over every phase's steps."""

    def __init__(self, lr: float, warmup: int, total: int):
        self.lr, self.warmup, self.total, self.step = lr, warmup, total, 0

    def next(self) -> float:
        s, self.step = self.step, self.step + 1
        if s < self.warmup:
            return self.lr * (s + 1) / self.warmup
        t = (s - self.warmup) / max(1, self.total - self.warmup)
        return self.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def run_phase(model, opt, sched, x, y, epochs, batch, gen, label_smoothing, x_eval, y_eval, name):
    pad = x.shape[-1] // 14  # shift augmentation of about 7% of the side
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        t0, loss_sum = time.time(), 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            lr = sched.next()
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(augment(x[idx], pad, gen)), y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
        acc = evaluate(model, x_eval, y_eval)
        log(f"{name} epoch {epoch + 1}/{epochs}: loss {loss_sum / len(x):.3f}, lr {lr:.2e}, "
            f"eval top-1 (first {len(y_eval)}) {acc:.3f} ({time.time() - t0:.0f}s)")


def parse_phases(text: str) -> list[tuple[int, int]]:
    """``"64:5,128:1"`` -> [(64, 5), (128, 1)]: resolution and epochs per phase ("" -> none)."""
    phases = []
    for part in filter(None, text.split(",")):
        res, _, epochs = part.partition(":")
        phases.append((int(res), int(epochs)))
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="demo data seed (and training seed)")
    parser.add_argument("--data", type=Path, default=None, help="demo data folder (default: the cache)")
    parser.add_argument("--phases", default="64:5,128:1",
                        help="low-resolution phases before the 224 fine-tune, as RES:EPOCHS,...")
    parser.add_argument("--ft-epochs", type=int, default=1, help="fine-tune epochs at 224")
    parser.add_argument("--ft-images", type=int, default=640, help="train images used at 224")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--monitor", type=int, default=200, help="eval images scored after each epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from this checkpoint (its JSON's training record is kept)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    spec = get_spec(MODEL).with_overrides(num_classes=len(CLASSES))
    pp = spec.preprocessing
    phases = parse_phases(args.phases)
    pps = [dataclasses.replace(pp, input_size=(res, res)) for res, _ in phases]

    t_start = time.time()
    root = demo_root(args.seed, args.data)
    log(f"data in {root}")
    x_train, y_train = load_split(root, "train", pps)
    x_eval_low, y_monitor = load_split(root, "eval", pps, limit=args.monitor)
    if phases:
        log(f"preprocessed {len(y_train)} train + {len(y_monitor)} eval images at {[r for r, _ in phases]}")

    if args.init is not None:
        meta = json.loads(args.init.with_suffix(".json").read_text(encoding="utf-8"))
        previous = {"training": meta["training"], "eval_top1": meta["eval_top1"]}
        model = load_model(spec, weights=str(args.init), seed=args.seed).train()
        log(f"continuing from {args.init} (eval top-1 {meta['eval_top1']})")
    else:
        previous = None
        model = build_model(spec)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "cls_token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    n_ft = min(args.ft_images, len(y_train))
    total = sum(e * math.ceil(len(y_train) / args.batch) for _, e in phases) + \
        args.ft_epochs * math.ceil(n_ft / args.batch)
    sched = Schedule(args.lr, args.warmup_steps, total)
    for (res, epochs), x, xe in zip(phases, x_train, x_eval_low):
        run_phase(model, opt, sched, x, y_train, epochs, args.batch, gen, args.label_smoothing, xe,
                  y_monitor, f"{res}px")
    del x_train, x_eval_low

    if args.ft_epochs:
        (x_ft,), y_ft = load_split(root, "train", [pp], limit=n_ft)
        (xe_ft,), ye_ft = load_split(root, "eval", [pp], limit=args.monitor)
        run_phase(model, opt, sched, x_ft, y_ft, args.ft_epochs, args.batch, gen, args.label_smoothing,
                  xe_ft, ye_ft, "224px")
        del x_ft, xe_ft
    (xe_hi,), y_eval = load_split(root, "eval", [pp])

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
        "dataset": {"generator": "xcit_export.data.demo.make_demo_dataset", "seed": args.seed,
                    "train_split": "train", "eval_split": "eval", "eval_images": len(y_eval)},
        "eval_top1": round(top1, 4),
        "preprocessing": pp.to_dict(),
        "training": {"command": command.strip(), "phases": args.phases, "ft_epochs": args.ft_epochs,
                     "ft_images": n_ft, "lr": args.lr, "warmup_steps": args.warmup_steps, "batch": args.batch,
                     "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
                     "threads": args.threads, "wall_clock_s": round(time.time() - t_start),
                     "continued_from": previous},
        "dtype": "float16",
    })
    for path in (args.out, args.out.with_suffix(".json")):
        path.chmod(0o644)  # the atomic temp file is created private; these are shipped files
    log(f"wrote {args.out} and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
