"""How close the LiteMedSAM image encoder runs to this machine's matmul rate, plain vs optimised, and at what Dice.

Prints, in one run:

1. the sustained fp32 (and bf16) matmul rate of this machine (GFLOP/s, 1024 x 1024 matmuls);
2. the encoder's FLOPs per 256 x 256 slice, counted with ``torch.utils.flop_counter``;
3. each encoder path's seconds per slice (median, IQR), GFLOP/s and fraction of the fp32 matmul rate,
   and its speed-up over the plain path -- the median of per-round ratios, the paths alternated in
   every round (ABAB...), so load swings on a shared machine hit every path alike;
4. the mean Dice of each path's masks on the 10 shared prostate slices (tight GT boxes, the same fp32
   decoder for every path), its change against the plain path and the pixel agreement.

Paths: ``plain`` (eager fp32, ``no_grad``, one slice per call: samlab before issue 20), ``exact``
(the default: inference mode, channels_last, threads, ``compile=off``), ``exact+batch`` (the same, 2
slices per call), ``compile`` (exact + torch.compile), ``bf16`` (autocast), ``compile+bf16``.
Compile times are printed separately (the first compile on a machine is cold; later ones reuse
``~/.cache/samlab/inductor``) and recorded for ``SAMLAB_COMPILE=auto``.

    .venv/bin/python benchmarks/encoder_efficiency.py --quick   # 3 rounds on 4 slices (Dice on all 10)
    .venv/bin/python benchmarks/encoder_efficiency.py           # 7 rounds on all 10 slices
    .venv/bin/python benchmarks/encoder_efficiency.py --paths plain exact compile
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import numpy as np
import torch

from samlab.models import Predictor, load_model, prepare_image
from samlab.models.accelerate import configure_threads

PATHS = ("plain", "exact", "exact+batch", "compile", "bf16", "compile+bf16")
SHARED = Path(os.environ.get("SAMLAB_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def matmul_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0, rounds: int = 5) -> float:
    """Median sustained GFLOP/s of ``n x n`` matmuls in ``dtype`` over ``rounds`` runs of ~``seconds`` each."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        rates.append(2 * n**3 * count / (time.perf_counter() - start) / 1e9)
    return float(np.median(rates))


def encoder_flops(encoder: torch.nn.Module, batch: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        encoder(batch)
    return counter.get_total_flops() / batch.shape[0]


def shared_slices(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from PIL import Image

    if not (folder / "masks").is_dir():
        raise SystemExit(f"{folder}: the shared prostate slices are absent (set SAMLAB_SHARED_DIR)")
    out = []
    for mask_path in sorted((folder / "masks").glob("*.png")):
        image = np.array(Image.open(next((folder / "images").rglob(mask_path.name))))
        out.append((mask_path.stem, image, np.array(Image.open(mask_path)) > 0))
    return out


def make_path(name: str, model, plain_encoder: torch.nn.Module):
    """A function embedding a list of slices -> list of (1, 256, 64, 64) fp32 tensors, and its predictor."""
    if name == "plain":
        spec = model.spec

        def plain(images):
            with torch.no_grad():
                return [plain_encoder(prepare_image(spec, image)[0]) for image in images]
        return plain, None
    compile_mode = "on" if name.startswith("compile") else "off"
    precision = "bf16" if name.endswith("bf16") else "fp32"
    batch = 2 if name == "exact+batch" else 1
    predictor = Predictor(model, compile=compile_mode, precision=precision, batch_size=batch)

    def fast(images):
        return [e.features for e in predictor.embed_many(images)]
    return fast, predictor


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds on 4 slices (Dice still on all slices)")
    parser.add_argument("--rounds", type=int, default=None, help="ABAB rounds (default 7, quick 3)")
    parser.add_argument("--timed-slices", type=int, default=None, help="slices timed per round (default all, quick 4)")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: available cores)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    paths = ["plain"] + [p for p in args.paths if p != "plain"]
    threads = configure_threads(args.threads)
    slices = shared_slices(SHARED / "data" / "mri-prostate-slices")
    timed = slices[: args.timed_slices or (4 if args.quick else len(slices))]
    model = load_model("litemedsam")
    plain_encoder = copy.deepcopy(model.module.image_encoder).eval()  # untouched by channels_last
    print(f"torch {torch.__version__}, {threads} threads, load average {os.getloadavg()[0]:.1f} "
          f"({'loaded' if os.getloadavg()[0] > threads * 0.5 else 'idle-ish'} machine)")

    fp32_rate = matmul_gflops(torch.float32)
    bf16_rate = matmul_gflops(torch.bfloat16)
    flops = encoder_flops(plain_encoder, prepare_image(model.spec, slices[0][1])[0])
    print(f"sustained matmul (1024^3): fp32 {fp32_rate:.0f} GFLOP/s, bf16 {bf16_rate:.0f} GFLOP/s")
    print(f"LiteMedSAM encoder: {flops / 1e9:.2f} GFLOP per 256 x 256 slice (torch.utils.flop_counter)")

    runners, predictors, features = {}, {}, {}
    images = [image for _, image, _ in slices]
    for name in paths:  # warm-up on all slices: compiles (timed) and gives the features scored below
        runners[name], predictors[name] = make_path(name, model, plain_encoder)
        start = time.perf_counter()
        features[name] = runners[name](images)
        first = time.perf_counter() - start
        note = ""
        if predictors[name] is not None and predictors[name].runner.compile_seconds is not None:
            note = f" (compile {predictors[name].runner.compile_seconds:.0f} s of it)"
        elif predictors[name] is not None and name.startswith("compile"):
            note = " (compile FAILED: eager fallback)"
        print(f"warm-up {name:<13} {first:7.1f} s for {len(images)} slices{note}", flush=True)

    times = {name: [] for name in paths}
    for r in range(rounds):
        order = paths if r % 2 == 0 else paths[::-1]  # ABAB... then reversed, so no path always runs first
        for name in order:
            start = time.perf_counter()
            runners[name]([image for _, image, _ in timed])
            times[name].append((time.perf_counter() - start) / len(timed))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}" for n in paths) + " s/slice", flush=True)

    masks = {}
    scorer = Predictor(model, compile="off")
    from samlab.models.predictor import Embedding, _geometry
    from samlab.prompts import box_from_mask

    for name in paths:
        masks[name] = []
        for (slice_name, image, gt), feature in zip(slices, features[name]):
            embedding = Embedding(feature.float(), _geometry(model.spec, *image.shape[:2]))
            masks[name].append(scorer.decode(embedding, boxes=[box_from_mask(gt)]).masks()[0])
    truth = [gt for _, _, gt in slices]
    plain_dice = np.mean([dice(m, g) for m, g in zip(masks["plain"], truth)])

    print(f"\n{len(timed)} slices timed per round, {rounds} rounds alternated; Dice on {len(slices)} shared slices "
          "(tight GT boxes, fp32 decoder)")
    print(f"{'path':<13} {'s/slice':>8} {'IQR':>13} {'GFLOP/s':>8} {'of fp32 mm':>10} {'speed-up':>9} {'IQR':>13} "
          f"{'Dice':>7} {'dDice':>8} {'pixels =':>9} {'max rel':>8}")
    plain_t = np.array(times["plain"])
    for name in paths:
        t = np.array(times[name])
        ratios = plain_t / t
        d = np.mean([dice(m, g) for m, g in zip(masks[name], truth)])
        agree = np.mean([np.mean(m == p) for m, p in zip(masks[name], masks["plain"])])
        rel = max(float((f.float() - p).abs().max() / p.abs().max()) for f, p in zip(features[name], features["plain"]))
        q = np.percentile(t, [25, 75])
        rq = np.percentile(ratios, [25, 75])
        print(f"{name:<13} {np.median(t):8.3f} {q[0]:6.3f}-{q[1]:6.3f} {flops / np.median(t) / 1e9:8.1f} "
              f"{flops / np.median(t) / 1e9 / fp32_rate:9.0%} {np.median(ratios):8.2f}x {rq[0]:5.2f}-{rq[1]:5.2f}x "
              f"{d:7.4f} {d - plain_dice:+8.4f} {agree:9.4%} {rel:8.1e}")
    print("\nspeed-up: median over rounds of plain / path (paired, same run). exact paths must keep Dice to 3 decimals.")


if __name__ == "__main__":
    main()
