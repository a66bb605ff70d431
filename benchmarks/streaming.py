"""Streaming evaluation at size (issue 22, item 6): peak RSS and images/s per stage of a real run.

Generates an ImageFolder of real-size JPEGs (500x375, one folder per class of the demo model, a
smooth random scene plus sensor-like noise, so JPEG sizes and decode costs are like photos'), then
for each size N runs, as a separate process::

    xcit-export -m xcit_nano_12_p16_224 --weights demo --eval DIR --eval-size N \\
        -t onnxruntime-fp32,openvino-int8 --calib demo --out OUT --no-profile --warmup 2 --iterations 10

and reports the child's peak RSS (``wait4``'s ``ru_maxrss`` of that process alone), wall time, and
the report's ``evaluation.throughput`` (decode, reference, each target). Every size uses the same
``--out``, so the artifacts are built once (the first run) and reused after.

With ``--compare N`` the first N selected images are also saved as one uncompressed ``.npz``
(through the same preprocessing, i.e. the whole set loaded at once) and run from it (the
memory-mapped path): top-1, top-5 and every agreement figure must be identical to the streamed run.

Usage::

    python benchmarks/streaming.py --sizes 1000 10000 --compare 1000 --data /tmp/stream-bench
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from xcit_export.data.demo import CLASSES  # noqa: E402

TARGETS = "onnxruntime-fp32,openvino-int8"
ACCURACY = ("top1", "top5", "top1_agreement", "top5_agreement", "reference_top1", "count")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _photo(index: int, size=(500, 375)) -> Image.Image:
    rng = np.random.default_rng(index)
    w, h = size
    coarse = (rng.random((6, 8, 3)) * 255).astype(np.uint8)  # a smooth scene...
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 12, (h, w, 3)).astype(np.int16)  # ...with grain
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_folder(root: Path, count: int, workers: int) -> Path:
    """``count`` JPEGs spread over the demo classes (reused if the folder already holds them)."""
    per_class = math.ceil(count / len(CLASSES))
    jobs = [(c, j) for c in range(len(CLASSES)) for j in range(per_class)]
    todo = [(c, j) for c, j in jobs if not (root / CLASSES[c] / f"{j:06d}.jpg").exists()]
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    if todo:
        log(f"writing {len(todo)} JPEGs under {root}")

        def write(job):
            c, j = job
            path = root / CLASSES[c] / f"{j:06d}.jpg"
            _photo(c * 1_000_000 + j).save(path.with_suffix(".tmp"), "JPEG", quality=90)
            os.replace(path.with_suffix(".tmp"), path)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(write, todo))
    return root


def run_cli(args: list[str], log_path: Path) -> dict:
    """Run the CLI as a child; its own peak RSS from wait4 (not the benchmark's, not other children's)."""
    cmd = [str(Path(sys.executable).with_name("xcit-export")), *args]
    log(" ".join(cmd))
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"xcit-export exited {code}; see {log_path}")
    return {"command": "xcit-export " + " ".join(args), "wall_s": round(wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def summary(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    tp = report["evaluation"]["throughput"]
    targets = {t["target"]: {k: (t.get("accuracy") or {}).get(k) for k in ACCURACY} | {"status": t["status"]}
               for t in report["targets"]}
    return {"count": report["evaluation"]["count"], "throughput": tp, "targets": targets,
            "reference_accuracy": report["reference"].get("accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--compare", type=int, default=1000, help="also run these first N as one .npz (0: no)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/xcit-stream-bench"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    folder = make_folder(args.data / "images", max(args.sizes + [args.compare]), args.threads)
    out = args.data / "out"
    common = ["-m", "xcit_nano_12_p16_224", "--weights", "demo", "-t", TARGETS, "--calib", "demo",
              "--out", str(out), "--threads", str(args.threads), "--no-profile", "--warmup", "2", "--iterations", "10"]
    results: dict = {"machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                                 "loadavg_at_start": open("/proc/loadavg").read().split()[:3]}, "runs": []}
    for n in args.sizes:
        row = run_cli(["--eval", str(folder), "--eval-size", str(n), *common], args.data / f"run-{n}.log")
        row.update(summary(out), source="folder")
        results["runs"].append(row)
        log(json.dumps({k: row[k] for k in ("count", "wall_s", "peak_rss_mb")}))
    if args.compare:
        sys.path.insert(0, str(REPO))
        from xcit_export.data.sets import evaluation_set
        from xcit_export.models.zoo import get_spec

        x, y = evaluation_set(folder, get_spec("xcit_nano_12_p16_224").preprocessing, args.compare, 0).load()
        npz = args.data / f"set-{args.compare}.npz"
        np.savez(npz, x=x, y=y)
        del x
        row = run_cli(["--eval", str(npz), *common], args.data / f"run-npz-{args.compare}.log")
        row.update(summary(out), source="npz (loaded at once, memory-mapped)")
        npz.unlink()
        results["runs"].append(row)
        streamed = next((r for r in results["runs"] if r["source"] == "folder" and r["count"] == args.compare), None)
        if streamed is not None:
            results["identical_accuracy"] = streamed["targets"] == row["targets"] and \
                streamed["reference_accuracy"] == row["reference_accuracy"]
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    if results.get("identical_accuracy") is False:
        raise SystemExit("the streamed run and the run on the same images loaded at once disagree")


if __name__ == "__main__":
    main()
