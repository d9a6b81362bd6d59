"""The mask decoder with its image side shared across the prompts of a slice vs the upstream call, per chunk size.

Prints, for LiteMedSAM's real weights on the 10 shared prostate slices (or phantom slices when ``../shared``
is absent), milliseconds per prompt of the upstream ``mask_decoder(...)`` call and of
:func:`samlab.models.shared_decoder.decode_prompts` at each chunk size (prompts per decoder call), median and
IQR over rounds that alternate the two (ABAB..., so load swings hit both alike), the median of the per-round
ratios, and the largest logit difference. Prompts: every structure's tight box, the same box grown by
5 px and shifted by 3 px, and its centre as a click: about what notebook 02 decodes per slice.

    .venv/bin/python benchmarks/decoder_shared.py                 # chunks 2 4 8, 5 rounds
    .venv/bin/python benchmarks/decoder_shared.py --chunks 1 2 16 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import samlab.models.predictor as predictor_module
from samlab.models import Predictor, load_model
from samlab.models.accelerate import configure_threads
from samlab.models.shared_decoder import decode_prompts

from decoder_layout import slices_and_boxes  # noqa: E402  (benchmarks/ is the script's folder)


def upstream(mask_decoder, image_embeddings, image_pe, sparse, dense, multimask):
    return mask_decoder(image_embeddings=image_embeddings, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                        dense_prompt_embeddings=dense, multimask_output=multimask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    threads = configure_threads()
    source, data = slices_and_boxes()
    model = load_model("litemedsam")
    predictor = Predictor(model)
    prompts = []
    for image, boxes in data:
        grown = boxes + np.array([-5, -5, 5, 5], dtype=np.float32)
        shifted = boxes + 3
        prompts.append((predictor.embed(image), np.concatenate([boxes, grown, shifted]),
                        ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None, :]))
    n_prompts = sum(len(b) + len(c) for _, b, c in prompts)

    def run(path, chunk: int) -> tuple[float, list[np.ndarray]]:
        predictor_module.decode_prompts = path
        predictor.decode_chunk = chunk
        start = time.perf_counter()
        out = []
        for embedding, boxes, clicks in prompts:
            out += [predictor.decode(embedding, boxes=boxes).logits, predictor.decode(embedding, points=clicks).logits]
        return (time.perf_counter() - start) / n_prompts * 1000, out

    load = os.getloadavg()[0]
    print(f"LiteMedSAM decoder, {source}, {n_prompts} prompts per round, {threads} threads, load average "
          f"{load:.1f} ({'loaded' if load > threads * 0.5 else 'idle-ish'})")
    for chunk in args.chunks:
        run(upstream, chunk), run(decode_prompts, chunk)  # warm-up
        times = {"upstream": [], "shared": []}
        max_diff = 0.0
        for r in range(args.rounds):
            order = ("upstream", "shared") if r % 2 == 0 else ("shared", "upstream")
            logits = {}
            for name in order:
                ms, logits[name] = run(upstream if name == "upstream" else decode_prompts, chunk)
                times[name].append(ms)
            max_diff = max(max_diff, max(float(np.abs(a - b).max()) for a, b in zip(logits["upstream"], logits["shared"])))
        line = [f"chunk {chunk:>2}:"]
        for name, values in times.items():
            q1, med, q3 = np.percentile(values, [25, 50, 75])
            line.append(f"{name} {med:6.1f} ms/prompt (IQR {q1:.1f}-{q3:.1f})")
        ratios = [u / s for u, s in zip(times["upstream"], times["shared"])]
        line.append(f"speed-up {np.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}); "
                    f"largest logit difference {max_diff:.3g}")
        print("  ".join(line))
    predictor_module.decode_prompts = decode_prompts


if __name__ == "__main__":
    main()
