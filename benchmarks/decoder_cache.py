"""Decoder-only fine-tuning: one epoch with and without the image-embedding cache (LiteMedSAM, CPU).

Without the cache, every training step runs the frozen image encoder on each item's slice
(what the reference training scripts do: a sample is an image plus a prompt). With the
cache, each slice is encoded once, before the first epoch, and an epoch only runs the
prompt encoder and the mask decoder. Both runs use the same recipe without pixel
augmentation (flips, equalisation and jitter cannot be applied to a cached embedding),
the same seed and the same items, so their first-epoch training losses must agree up to
floating-point differences of batched vs single-image encoding -- the script prints the gap.

The goal of the issue is an epoch-time ratio >= 10x on the CPU; it holds as long as an
item's decoder step is cheap next to an encoder pass (both timings are printed). The
one-off embedding cost is printed too, with the number of epochs after which the cache
has paid for itself.

    .venv/bin/python benchmarks/decoder_cache.py [--slices 8] [--method lora] [--threads N]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from samlab.data.phantom import STRUCTURES, make_phantom_case
from samlab.data.preprocess import clip_percentiles
from samlab.models import EmbeddingCache
from samlab.train import GridConfig, build_model, get_recipe, sample_slices, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8, help="training slices (from two phantom cases)")
    parser.add_argument("--method", default="lora", choices=["vanilla", "lora", "adapter"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = []
    for seed in (2000, 2001):
        case = make_phantom_case(seed)
        cases.append(type(case)(case.case_id, clip_percentiles(case.image), case.labels, case.spacing))
    train_slices = sample_slices(cases, STRUCTURES, max_slices=args.slices, seed=0)
    val_slices = train_slices[:1]
    recipe = get_recipe("litemedsam_refine", max_epochs=1, flips=False)
    config = GridConfig("litemedsam", "decoder", args.method)
    print(f"torch threads: {torch.get_num_threads()}; {config.name}; recipe {recipe.name} (flips off); "
          f"{len(train_slices)} training slices, {len(STRUCTURES)} structures")

    def run(use_cache: bool):
        loaded = build_model(config, "box", seed=0)
        return train(loaded, train_slices, val_slices, STRUCTURES, recipe, use_cache=use_cache,
                     cache=EmbeddingCache() if use_cache else None, progress=False)

    start = time.perf_counter()
    cached = run(True)
    cached_total = time.perf_counter() - start
    uncached = run(False)
    t_cached, t_uncached = cached.epoch_seconds[0], uncached.epoch_seconds[0]
    n = cached.n_train_items
    one_off = cached_total - t_cached
    print(f"items per epoch: {n} (batch {recipe.batch_size})")
    print(f"epoch without cache: {t_uncached:7.1f} s  ({t_uncached / n:.2f} s per item: encoder + decoder step)")
    print(f"epoch with cache   : {t_cached:7.1f} s  ({t_cached / n:.2f} s per item: decoder step only)")
    print(f"ratio: {t_uncached / t_cached:.1f}x  (goal >= 10x: {'met' if t_uncached / t_cached >= 10 else 'NOT met'})")
    print(f"one-off cost of the cache (encode {cached.encoder_passes} slices + epoch-0 validation, model build): "
          f"{one_off:.1f} s; pays for itself after {one_off / max(t_uncached - t_cached, 1e-9):.2f} epochs")
    gap = abs(cached.history[1]["train_loss"] - uncached.history[1]["train_loss"])
    print(f"first-epoch training loss: cached {cached.history[1]['train_loss']:.6f}, "
          f"uncached {uncached.history[1]['train_loss']:.6f} (|difference| {gap:.2e})")


if __name__ == "__main__":
    main()
