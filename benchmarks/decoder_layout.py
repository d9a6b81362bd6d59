"""The mask decoder with token-major image tokens vs the upstream layout: speed per prompt, and equality.

Prints, for LiteMedSAM's real weights on the 10 shared prostate slices (or phantom slices when
``../shared`` is absent): milliseconds per prompt of each layout (median and IQR over rounds that
alternate the two, ABAB..., so load swings hit both alike), the median of the per-round ratios, and the
largest logit difference between the layouts (0 expected: see ``samlab/models/decoder_layout.py``).
Prompts: a tight box per structure and per slice, and the box's centre as a point, decoded
``Predictor.decode_chunk`` prompts per decoder call, as notebooks 02, 02b, 04-06 do.

    .venv/bin/python benchmarks/decoder_layout.py            # 7 rounds
    .venv/bin/python benchmarks/decoder_layout.py --rounds 3
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from samlab.models import Predictor, load_model
from samlab.models.accelerate import configure_threads
from samlab.models.decoder_layout import remove_token_major_layout, use_token_major_layout

SHARED = Path(os.environ.get("SAMLAB_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def slices_and_boxes() -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    folder = SHARED / "data" / "mri-prostate-slices"
    out = []
    if (folder / "masks").is_dir():
        from PIL import Image

        for mask_path in sorted((folder / "masks").glob("*.png")):
            image = np.array(Image.open(next((folder / "images").rglob(mask_path.name))))
            ys, xs = np.nonzero(np.array(Image.open(mask_path)) > 0)
            out.append((image, np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=np.float32)))
        return f"{len(out)} shared prostate slices", out
    from samlab.data.phantom import STRUCTURES, make_phantom_case

    for seed in range(4):
        case = make_phantom_case(seed, shape=(8, 96, 96))
        z = case.labels.shape[0] // 2
        boxes = [[xs.min(), ys.min(), xs.max(), ys.max()] for ids in STRUCTURES.values()
                 for ys, xs in [np.nonzero(np.isin(case.labels[z], ids))] if len(xs)]
        out.append((case.image[z].astype(np.float32), np.asarray(boxes, dtype=np.float32)))
    return f"{len(out)} phantom slices (../shared absent)", out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    threads = configure_threads()
    source, data = slices_and_boxes()
    model = load_model("litemedsam")
    predictor = Predictor(model)
    decoder = model.module.mask_decoder
    embeddings = [(predictor.embed(image), boxes) for image, boxes in data]
    n_prompts = sum(2 * len(boxes) for _, boxes in embeddings)

    def decode_all() -> list[np.ndarray]:
        out = []
        for embedding, boxes in embeddings:
            centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None, :]
            out += [predictor.decode(embedding, boxes=boxes).logits, predictor.decode(embedding, points=centres).logits]
        return out

    def run(layout: str) -> tuple[float, list[np.ndarray]]:
        (use_token_major_layout if layout == "token_major" else remove_token_major_layout)(decoder)
        start = time.perf_counter()
        logits = decode_all()
        return (time.perf_counter() - start) / n_prompts * 1000, logits

    load = os.getloadavg()[0]
    print(f"LiteMedSAM decoder, {source}, {n_prompts} prompts per round, chunk {predictor.decode_chunk}, "
          f"{threads} threads, load average {load:.1f} ({'loaded' if load > threads * 0.5 else 'idle-ish'})")
    run("upstream"), run("token_major")  # warm-up
    times = {"upstream": [], "token_major": []}
    max_diff = 0.0
    for r in range(args.rounds):
        order = ("upstream", "token_major") if r % 2 == 0 else ("token_major", "upstream")
        logits = {}
        for layout in order:
            ms, logits[layout] = run(layout)
            times[layout].append(ms)
        max_diff = max(max_diff, max(float(np.abs(a - b).max()) for a, b in zip(logits["upstream"], logits["token_major"])))
    use_token_major_layout(decoder)
    for layout, values in times.items():
        q1, med, q3 = np.percentile(values, [25, 50, 75])
        print(f"{layout:<12} {med:6.1f} ms/prompt (IQR {q1:.1f}-{q3:.1f})")
    ratios = [u / t for u, t in zip(times["upstream"], times["token_major"])]
    print(f"speed-up token_major vs upstream: {np.median(ratios):.2f}x (median of {len(ratios)} paired rounds, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}); largest logit difference {max_diff:.3g}")


if __name__ == "__main__":
    main()
