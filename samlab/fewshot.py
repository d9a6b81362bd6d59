"""Few-shot fine-tuning (notebook 05): k labelled slices from k distinct volumes, several seeds.

The 18-configuration study trains on 5 (and 10, 20) images drawn from distinct
volumes for both training and validation, with its few-shot recipe: up to 1000
epochs, batch 2, no early stopping. This module only adds the sampling, the
(configuration x k x seed) protocol (:func:`run_few_shot`) and the learning-curve
figure around :func:`samlab.train.train` and :func:`samlab.finetune.evaluate`, which
notebook 04 uses too.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from .data.splits import k_shot_splits
from .finetune import checkpoint_dir, config_label, evaluate, init_settings
from .models import EmbeddingCache
from .train import Recipe, SliceRecord, train
from .train.configs import GridConfig, build_model


def _slice_key(record: SliceRecord) -> str:
    return f"{record.case_id}:{record.z:05d}"


def k_shot_slices(train_pool: Sequence[SliceRecord], val_pool: Sequence[SliceRecord], k: int, seed: int,
                  k_val: int | None = None) -> dict[str, list[SliceRecord]]:
    """``k`` training and ``k_val`` (default ``k``) validation slices, each from a distinct volume.

    Raises a ValueError naming how many volumes exist when a pool is too small (the
    phantom's quick run has 5 training volumes: 10- and 20-shot need real data).
    """
    return k_shot_splits(list(train_pool), list(val_pool), k, seed, volume_of=lambda s: s.case_id,
                         k_val=k_val, key=_slice_key)


def run_few_shot(grid: Sequence[GridConfig], params: Any, train_pool: Sequence[SliceRecord],
                 val_pool: Sequence[SliceRecord], test_cases: Sequence[Any], structures: Mapping[str, Sequence[int]],
                 recipe: Recipe | Mapping[str, Recipe], *, dataset: str, checkpoint_root: str | Path, device: str | torch.device = "cpu",
                 cache: EmbeddingCache | None = None, verbose: bool = True,
                 orientation: str = "as_stored") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every configuration x k x seed: draw k slices, fine-tune from the pretrained weights, test in 3D (notebook 05).

    Why each (configuration, k, seed) starts from the pretrained model: the learning curve
    asks what k labelled slices buy, so no run may inherit another's training. The seed
    draws the slices (:func:`k_shot_slices`) *and* initialises the new PEFT modules, so a
    point of the curve is reproducible on its own. Checkpoints go to
    ``checkpoint_root/<config>-<hash of recipe, k, seed and the drawn slices>``: an
    interrupted run resumes instead of starting over. ``params`` is a
    :class:`samlab.config.FewShotParams` (shots, seeds, k_val, checkpoints, caching, NSD
    tolerance). Returns the tidy test results (with ``shots`` and ``seed``) and the drawn
    slices of every run (``config``, ``k``, ``seed``, ``train``, ``val``). ``orientation`` (the run's
    curation setting) is written into every row. ``recipe`` is one recipe for every configuration, or
    one per training mode (:meth:`samlab.config.FewShotParams.training_recipe`).
    """
    frames, picks = [], []
    recipes = recipe if isinstance(recipe, Mapping) else {c.mode: recipe for c in grid}
    missing = sorted({c.mode for c in grid} - set(recipes))
    if missing:
        raise ValueError(f"run_few_shot: no recipe for training mode(s) {missing}; give one per mode of the grid")
    for cfg in grid:
        recipe = recipes[cfg.mode]
        for k in params.shots:
            for s in params.seeds:
                sample = k_shot_slices(train_pool, val_pool, k, seed=s, k_val=params.k_val)
                picks.append({"config": cfg.name, "k": k, "seed": s,
                              "train": [f"{r.case_id}:z{r.z}" for r in sample["train"]],
                              "val": [f"{r.case_id}:z{r.z}" for r in sample["val"]]})
                loaded = build_model(cfg, structures=structures, checkpoint=params.checkpoints.get(cfg.model),
                                     allow_random_init=params.allow_random_init, device=device, seed=s,
                                     checkpoints=params.checkpoints)
                settings = init_settings(cfg, loaded, {"recipe": recipe.model_dump(mode="json"), "k": k, "seed": s,
                                                       "train": picks[-1]["train"], "val": picks[-1]["val"]})
                start = time.perf_counter()
                result = train(loaded, sample["train"], sample["val"], structures, recipe, mode=cfg.mode,
                               out_dir=checkpoint_dir(checkpoint_root, cfg, settings), device=device, seed=s,
                               cache=cache, use_cache=None if params.use_cache else False, progress=False)
                context = {"dataset": dataset, "method": "few_shot", "backbone": cfg.model, "scope": cfg.scope,
                           "peft": cfg.method, "init": loaded.init, "prompt": cfg.prompt, "mode": cfg.mode,
                           "recipe": recipe.label, "shots": k, "seed": s, "orientation": orientation}
                frame, _ = evaluate(loaded, test_cases, structures, cfg.mode, context=context, device=device,
                                    cache=cache, nsd_tolerance_mm=params.nsd_tolerance_mm)
                frames.append(frame)
                if verbose:
                    dice3d = frame[(frame.metric == "dice") & (frame.slice == -1)]["value"].mean()
                    print(f"{cfg.name} k={k} seed={s}: best epoch {result.best_epoch}, test 3D Dice {dice3d:.3f} "
                          f"({time.perf_counter() - start:.0f} s)")
    return pd.concat(frames, ignore_index=True), pd.DataFrame(picks)


def _per_seed(results: pd.DataFrame, metric: str, level: str) -> pd.DataFrame:
    """One score per (configuration, k, seed): the mean of ``metric`` over volumes (3D) or slices (2D)."""
    frame = results[results["metric"] == metric]
    frame = frame[frame["slice"] == -1] if level == "3d" else frame[frame["slice"] != -1]
    frame = frame.assign(config=config_label(frame))
    return frame.groupby(["config", "shots", "seed"])["value"].mean().reset_index()


def learning_curve(results: pd.DataFrame, metric: str = "dice", level: str = "3d") -> pd.DataFrame:
    """Mean and sd over seeds (of the per-volume mean) of one metric against k, per configuration."""
    per_seed = _per_seed(results, metric, level)
    return per_seed.groupby(["config", "shots"])["value"].agg(["mean", "std", "count"]).reset_index()


def learning_curve_title(rows: pd.DataFrame, n_seeds: int) -> str:
    """What the learning curve shows, read from its rows with the report's helpers (data and n, mode, recipe,
    starting weights), so that it names them exactly as notebook 07's figures do."""
    from .report.conditions import data_description, modes_text, recipe_text

    inits = ", ".join(str(i) for i in pd.unique(rows["init"]))
    lines = (f"{data_description(rows, 'test volumes')}, {n_seeds} seed(s): few-shot",
             f"{modes_text(rows)}; starting weights: {inits}", recipe_text(rows))
    return "\n".join(line for line in lines if line)


def plot_learning_curve(results: pd.DataFrame, metric: str = "dice", level: str = "3d"):
    """Dice against k per configuration (points = seeds, line = mean), the paper's Figure 12 analogue."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    per_seed = _per_seed(results, metric, level)
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=per_seed, x="shots", y="value", hue="config", marker="o", errorbar="sd", ax=ax)
    sns.stripplot(data=per_seed, x="shots", y="value", hue="config", native_scale=True, dodge=False,
                  alpha=0.5, legend=False, ax=ax)
    ax.set_xlabel("k (training slices, one per volume)")
    ax.set_ylabel(f"{'Dice' if metric == 'dice' else metric.upper()} ({level}, mean over test volumes)")
    ax.set_ylim(0, 1)
    ax.set_title(learning_curve_title(results[results["metric"] == metric], per_seed["seed"].nunique()), fontsize=9)
    fig.tight_layout()
    return fig
