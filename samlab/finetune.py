"""The fine-tuning grid (notebook 04): configurations, slice data, training runs, test evaluation, figures.

One configuration is *backbone x scope x method* (the 18-configuration study's grid:
``samlab.peft`` builds it, :func:`samlab.train.train` trains it). This module holds what
the notebook needs around that, so its cells read like a methods section:

* :func:`make_grid` -- the configurations to run (any registry model as the backbone;
  LiteMedSAM is the CPU stand-in for the paper's ViT-T: the same TinyViT family, real
  weights, 256 px input);
* :func:`sample_slices` -- 2D training/validation slices from the run directory's split,
  optionally a seeded subsample (the quick CPU profile);
* :func:`build_model` -- load weights, resize the decoder for automatic mode, apply PEFT
  (these three live in :mod:`samlab.train.configs` / :mod:`samlab.train.data`, below the
  engine, and are re-exported here);
* :func:`run_grid` -- train and test every configuration in turn (checkpointed, resumable);
  :func:`choose_on_validation` -- the configuration to report per backbone and mode;
* :func:`evaluate` -- the test split, slice by slice, with the zero-shot notebook's
  protocol (in box mode one tight box per structure and slice from the ground truth, the
  "oracle box"; slices without the structure stay empty), masks stacked back into the
  volume; Dice and NSD per slice (2D, in-plane spacing) and Dice, NSD and HD95 per volume
  (3D, the volume's spacing), as tidy results rows;
* :func:`parameter_table` -- the Table-3 analogue; :func:`compare_structures` -- fine-tuned
  vs a reference (zero-shot, nnU-Net) per structure; two figures (Figure 4 and 5 analogues).

Why one model for all structures (box mode): it is what the pelvic study refined (one
LiteMedSAM, every structure prompted by its own box) and it costs one training run per
configuration instead of one per structure and configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import prompts as P
from .metrics import evaluate_masks
from .models import EmbeddingCache, LoadedModel, Predictor
from .peft import METHODS, PAPER_TABLE3, count_parameters
from .results import make_rows, to_frame
from .train import SliceRecord, TrainResult, class_values, encoder_is_trainable, train
from .train.configs import PAPER_BACKBONE, GridConfig, build_model, make_grid
from .train.data import classes_to_labels, sample_slices, stack_clicks

#: Re-exported from :mod:`samlab.train.configs` / :mod:`samlab.train.data` (they live below the engine so that
#: a torchrun rank builds the same model and slices without importing this notebook API).
__all__ = [
    "PAPER_BACKBONE", "GridConfig", "GridRun", "build_model", "checkpoint_dir", "choose_on_validation",
    "compare_inits", "compare_structures", "config_label", "evaluate", "grid_settings", "init_settings", "make_grid",
    "parameter_table", "plot_grid_bars", "plot_init_comparison", "plot_structure_comparison", "plot_validation_curves", "predict_case", "run_grid",
    "sample_slices", "selection_score", "train_configuration",
]

def checkpoint_dir(root: str | Path, config: GridConfig, settings: Mapping[str, Any]) -> Path:
    """``root/<config>-<hash of settings>``: a changed recipe or data never resumes an old run."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in config.name)  # sslsam:<stem> -> sslsam_<stem>
    return Path(root) / f"{safe}-{digest}"


def train_configuration(config: GridConfig, loaded: LoadedModel, params: Any, train_slices: Sequence[SliceRecord],
                        val_slices: Sequence[SliceRecord], structures: Mapping[str, Sequence[int]],
                        out_dir: str | Path, device: str | torch.device = "cpu",
                        cache: EmbeddingCache | None = None) -> tuple[LoadedModel, TrainResult]:
    """Train one configuration with notebook 04's parameters; in this process, or under torchrun (DDP).

    ``params`` is a :class:`samlab.config.FinetuneParams`. With ``params.nproc_per_node > 1``
    the configuration is written as a :class:`samlab.train.job.TrainJob` and trained by that
    many processes (:func:`samlab.finetune_job.run_job_distributed`) (one per GPU); they rebuild the same model and the same slices from the
    run directory, and ``loaded`` (``None``: built here) then takes ``best.pt``'s weights. Either
    way the result has the same fields, so the notebook does not care which path ran.
    """
    if params.nproc_per_node > 1:
        from .finetune_job import run_job_distributed
        from .train.job import TrainJob

        job = TrainJob(**{**params.model_dump(mode="json"), "models": [config.model], "scopes": [config.scope],
                          "methods": [config.method], "inits": [config.init] if config.init else [],
                          "modes": [config.mode],
                          "out_dir": str(out_dir)})
        loaded, record = run_job_distributed(job, params.nproc_per_node, loaded=loaded)
        names = {f.name for f in dataclasses.fields(TrainResult)}
        return loaded, TrainResult(**{k: v for k, v in record.items() if k in names}, checkpoint_dir=Path(out_dir))
    result = train(loaded, train_slices, val_slices, structures, params.training_recipe(config.mode), mode=config.mode,
                   out_dir=out_dir, resume=params.resume, device=device, seed=params.seed,
                   use_cache=None if params.use_cache else False, cache=cache, cache_flips=params.cache_flips,
                   min_object_px=params.min_object_px)
    return loaded, result


@dataclass
class GridRun:
    """What :func:`run_grid` produced: the tidy test results, each configuration's training record and model."""

    results: pd.DataFrame
    runs: dict[str, TrainResult]
    models: dict[str, LoadedModel]

    @property
    def histories(self) -> dict[str, list[dict]]:
        """Validation history per configuration (epoch 0 = the pretrained model), for Figure 5."""
        return {name: result.history for name, result in self.runs.items()}


def grid_settings(params: Any, train_slices: Sequence[SliceRecord], val_slices: Sequence[SliceRecord],
                  mode: str = "box") -> dict[str, Any]:
    """Everything besides the configuration that defines a grid training run (hashed into its checkpoint folder).

    A change to any of these -- recipe, data, caching, process count -- must start a fresh
    run rather than resume one trained under other settings. The recipe is the one of the
    configuration's training ``mode`` (automatic mode may change it, ``automatic_overrides``);
    :func:`init_settings` adds the mode itself.
    """
    return {"recipe": params.training_recipe(mode).model_dump(mode="json"), "seed": params.seed,
            "slices": [(s.case_id, s.z) for s in train_slices], "val": [(s.case_id, s.z) for s in val_slices],
            "cache": params.use_cache, "cache_flips": params.cache_flips, "min_object_px": params.min_object_px,
            "processes": params.nproc_per_node}


def init_settings(config: GridConfig, loaded: LoadedModel, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` plus the configuration's mode, and a named init with its weights' hash: a re-trained
    phase-1 file never resumes an old run.

    Unnamed inits (``config.init is None``) add no init keys, so runs made before named inits
    existed keep their checkpoint folders.
    """
    settings = {**settings, "mode": config.mode}
    if config.init is None:
        return settings
    return {**settings, "init": config.init, "init_sha256": loaded.sha256}


def run_grid(grid: Sequence[GridConfig], built: Mapping[str, LoadedModel], params: Any,
             train_slices: Sequence[SliceRecord], val_slices: Sequence[SliceRecord], test_cases: Sequence[Any],
             structures: Mapping[str, Sequence[int]], *, dataset: str, checkpoint_root: str | Path,
             device: str | torch.device = "cpu", cache: EmbeddingCache | None = None,
             verbose: bool = True, orientation: str = "as_stored") -> GridRun:
    """Train every configuration of the grid in turn, then evaluate it on the test cases (notebook 04, step 3).

    Why one function: each configuration goes through the same three steps -- train (in this
    process or under torchrun, :func:`train_configuration`), evaluate on the test split with
    the zero-shot protocol (:func:`evaluate`), move the model off the accelerator for the
    next one -- and the notebook should state that protocol, not re-implement it.
    ``built`` holds the models of :func:`build_model` by configuration name (untouched; the
    trained ones are in the result). Checkpoints go to ``checkpoint_root/<config>-<hash>``
    (:func:`checkpoint_dir` of :func:`grid_settings`), so a rerun with the same settings
    resumes or reloads instead of retraining. ``params`` is a
    :class:`samlab.config.FinetuneParams`. ``orientation`` (the run's curation setting) is written into every row.
    """
    settings = {mode: grid_settings(params, train_slices, val_slices, mode) for mode in {c.mode for c in grid}}
    runs: dict[str, TrainResult] = {}
    models: dict[str, LoadedModel] = {}
    frames = []
    for cfg in grid:
        start = time.perf_counter()
        loaded, result = train_configuration(cfg, built[cfg.name], params, train_slices, val_slices, structures,
                                             checkpoint_dir(checkpoint_root, cfg, init_settings(cfg, built[cfg.name],
                                                                                               settings[cfg.mode])),
                                             device=device, cache=cache)
        models[cfg.name], runs[cfg.name] = loaded, result
        context = {"dataset": dataset, "method": "finetune", "backbone": cfg.model, "scope": cfg.scope,
                   "peft": cfg.method, "init": loaded.init, "prompt": cfg.prompt,
                   "mode": cfg.mode, "recipe": params.training_recipe(cfg.mode).label, "seed": params.seed,
                   "orientation": orientation}
        frame, _ = evaluate(loaded, test_cases, structures, cfg.mode, context=context, device=device, cache=cache,
                            nsd_tolerance_mm=params.nsd_tolerance_mm)
        frames.append(frame)
        loaded.module.cpu()  # free the accelerator for the next configuration
        if verbose:
            print(f"{cfg.name}: {result.n_train_items} training items, {result.encoder_passes} encoder passes, "
                  f"best epoch {result.best_epoch} ({result.select_on} {result.best_score:.4f}), "
                  f"augmentations {result.augmentations}, {time.perf_counter() - start:.0f} s")
    return GridRun(pd.concat(frames, ignore_index=True), runs, models)


def selection_score(result: TrainResult) -> float:
    """Higher is better: the best validation Dice, or minus the best validation loss (the recipe's criterion)."""
    return result.best_score if result.select_on == "val_dice" else -result.best_score


def choose_on_validation(grid: Sequence[GridConfig], runs: Mapping[str, TrainResult]
                         ) -> dict[tuple[str, str], GridConfig]:
    """Per backbone and mode, the configuration to report: the best on the *validation* split, never on test.

    Why: choosing the configuration by its test score would report an optimistically biased
    number. Each run's best epoch was already selected on validation by the recipe's
    criterion (:func:`selection_score`); ties go to the earlier configuration in grid order.
    Modes are chosen apart: a box-prompted and a prompt-free model answer different questions,
    and their validation scores are not on one scale. Keys: ``(model, mode)``.
    """
    chosen = {}
    for key in dict.fromkeys((c.model, c.mode) for c in grid):
        chosen[key] = max((c for c in grid if (c.model, c.mode) == key), key=lambda c: selection_score(runs[c.name]))
    return chosen


# ------------------------------------------------------------------------------------------- evaluation
def predict_case(predictor: Predictor, case: Any, structures: Mapping[str, Sequence[int]], mode: str,
                 values: Sequence[int] = (), prompt_seed: int = 0) -> dict[str, np.ndarray]:
    """3D boolean predictions per structure for one case.

    Box mode: on every slice, one tight box per structure present in the ground truth (all
    boxes of a slice decoded together from one embedding); other slices stay empty.
    Point mode: the same with one prompt of clicks per structure, a click in each connected piece
    (at most :data:`~samlab.prompts.MAX_CLICKS`), drawn deeper than the median edge distance by a
    generator keyed by (``prompt_seed``, case, slice, structure): every model of a run gets the same clicks.
    Automatic mode: every slice is segmented without a prompt; the class map is turned back
    into label values and a structure is the union of its values.
    """
    shape = case.labels.shape
    out = {name: np.zeros(shape, dtype=bool) for name in structures}
    for z in range(shape[0]):
        labels = case.labels[z]
        if mode in ("box", "point"):
            present = [(n, np.isin(labels, tuple(v))) for n, v in structures.items()]
            present = [(n, m) for n, m in present if m.any()]
            if not present:
                continue
            embedding = predictor.embed(case.image[z])
            if mode == "box":
                decoded = predictor.decode(embedding, boxes=np.stack([P.box_from_mask(m) for _, m in present]))
            else:
                points, point_labels = stack_clicks([
                    P.structure_clicks(m, P.prompt_rng(prompt_seed, case.case_id, z, name, "point_deep"))
                    for name, m in present])
                decoded = predictor.decode(embedding, points=points, point_labels=point_labels)
            masks = decoded.masks()
            for (name, _), mask in zip(present, masks):
                out[name][z] = mask
        else:
            decoded = predictor.decode(predictor.embed(case.image[z]), multimask=True)
            predicted = classes_to_labels(decoded.logits[0].argmax(axis=0), values)
            for name, vals in structures.items():
                out[name][z] = np.isin(predicted, tuple(vals))
    return out


def evaluate(loaded: LoadedModel, cases: Sequence[Any], structures: Mapping[str, Sequence[int]], mode: str = "box",
             *, context: Mapping[str, Any], device: str | torch.device = "cpu", cache: EmbeddingCache | None = None,
             nsd_tolerance_mm: float = 2.0, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Tidy 2D and 3D results of a (fine-tuned) model on ``cases``, and its 3D predictions.

    2D rows (``slice`` = z) cover the slices where the ground truth shows the structure
    (the 18-configuration study evaluates non-empty images), with Dice and NSD at the
    in-plane spacing; 3D rows (``slice`` = -1) score the stacked volume with Dice, NSD and
    HD95 at the volume's spacing, as the pelvic study does. ``context`` fills the other
    results columns (method, backbone, scope, peft, init, prompt, seed, dataset); its ``seed`` keys the clicks
    of point mode.
    The embedding cache is used only while the image encoder is frozen.
    """
    module = loaded.module
    use_cache = cache if not encoder_is_trainable(module) else None
    predictor = Predictor(loaded, device=device, cache=use_cache)
    values = class_values(structures)
    rows: list[dict] = []
    predictions: dict[tuple[str, str], np.ndarray] = {}
    for case in tqdm(cases, desc=f"evaluate {context.get('backbone', '')} {context.get('scope', '')} "
                                 f"{context.get('peft', '')}".strip(), disable=not progress, leave=False):
        predicted = predict_case(predictor, case, structures, mode, values, prompt_seed=int(context.get("seed", 0)))
        plane = (float(case.spacing[1]), float(case.spacing[2]))
        for name, volume in predicted.items():
            gt = np.isin(case.labels, tuple(structures[name]))
            base = {"dataset": "", **context, "subject": case.case_id, "structure": name}
            rows += make_rows({**base, "slice": -1}, evaluate_masks(volume, gt, case.spacing, ("dice", "nsd", "hd95"),
                                                                   nsd_tolerance_mm))
            for z in np.flatnonzero(gt.any(axis=(1, 2))):
                rows += make_rows({**base, "slice": int(z)},
                                  evaluate_masks(volume[z], gt[z], plane, ("dice", "nsd"), nsd_tolerance_mm))
            predictions[(case.case_id, name)] = volume
    module.eval()
    return to_frame(rows), predictions


# ------------------------------------------------------------------------------------------- tables
def parameter_table(models: Mapping[str, nn.Module], configs: Sequence[GridConfig]) -> pd.DataFrame:
    """Table-3 analogue: total / trainable parameters of the built configurations, with the paper's beside.

    LiteMedSAM's row is set against the paper's ViT-T row (same encoder family, 256 px input);
    the paper's decoder has 2 mask outputs (prompt-free foreground/background), SAM's and
    LiteMedSAM's box-mode decoder 3, hence ~0.14 M more decoder parameters in our rows.
    """
    records = []
    for config in configs:
        counts = count_parameters(models[config.name])
        paper = PAPER_TABLE3.get(config.paper_name or "", {})
        records.append({
            "configuration": config.name,
            "paper row": config.paper_name or "-",
            "params (M)": counts["total"] / 1e6,
            "trainable (M)": counts["trainable"] / 1e6,
            "trainable %": 100.0 * counts["trainable"] / counts["total"],
            "paper params (M)": paper.get("total_m", np.nan),
            "paper trainable (M)": paper.get("trainable_m", np.nan),
            "paper trainable %": paper.get("trainable_pct", np.nan),
        })
    return pd.DataFrame.from_records(records).set_index("configuration")


#: ``init`` values that name no starting point of their own (unnamed weights, older results): no ``@`` suffix.
UNNAMED_INITS = ("", "pretrained", "random")


def config_label(frame: pd.DataFrame) -> pd.Series:
    """``backbone-scope-peft`` of each results row, ``-automatic`` for prompt-free rows (``-point`` for
    click-prompted ones), ``@<init>`` for named starting weights (= GridConfig.name)."""
    base = frame["backbone"].astype(str) + "-" + frame["scope"].astype(str) + "-" + frame["peft"].astype(str)
    if "mode" in frame:
        base = base + frame["mode"].astype(str).map(lambda m: "" if m in ("box", "", "none") else f"-{m}")
    init = frame["init"].astype(str) if "init" in frame else pd.Series("", index=frame.index)
    return base + init.map(lambda i: "" if i in UNNAMED_INITS else f"@{i}")


def compare_structures(finetuned: pd.DataFrame, reference: pd.DataFrame, reference_name: str,
                       metric: str = "dice", shape_class: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per structure: the reference's mean 3D ``metric``, each fine-tuned configuration's, and the gain.

    Only subjects present in both tables are used (a paired comparison on the same test
    volumes). ``gain (<config>)`` = fine-tuned - reference.
    """
    def volume_rows(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["metric"] == metric) & (frame["slice"] == -1)]

    ft, ref = volume_rows(finetuned).copy(), volume_rows(reference)
    subjects = sorted(set(ft["subject"]) & set(ref["subject"]))
    if not subjects:
        raise ValueError(f"no test subject is scored in both the fine-tuned results and {reference_name!r}")
    ft = ft[ft["subject"].isin(subjects)]
    ref = ref[ref["subject"].isin(subjects)]
    ft["configuration"] = config_label(ft)
    table = ft.pivot_table(index="structure", columns="configuration", values="value", aggfunc="mean")
    table.insert(0, reference_name, ref.groupby("structure")["value"].mean())
    for column in list(table.columns[1:]):
        table[f"gain ({column})"] = table[column] - table[reference_name]
    if shape_class is not None:
        table.insert(0, "shape", [shape_class.get(s, "") for s in table.index])
    table.attrs["subjects"] = subjects
    return table


# ------------------------------------------------------------------------------------------- figures
def grid_bars_title(frame: pd.DataFrame, level: str) -> str:
    """What :func:`plot_grid_bars` shows, read from its rows: data and n, prompt mode(s), recipe(s).

    The notebook's grid figure once carried only "test DICE (2d, ...)": nothing said phantom or real, how many
    volumes, which mode or how long it trained -- the facts a reader needs to weigh the bars.
    """
    from .report.conditions import data_description, modes_text, recipe_text

    what = data_description(frame, "test volumes")
    if level == "2d":
        what += f" ({frame.groupby(['dataset', 'subject', 'slice']).ngroups} slices)"
    return "\n".join(part for part in (f"{what}; {modes_text(frame)}", recipe_text(frame)) if part)


def plot_grid_bars(results: pd.DataFrame, metrics: Sequence[str] = ("dice", "nsd"), level: str = "2d",
                   min_n: int | None = None):
    """Figure-4 analogue: mean test score per configuration, grouped backbone x scope x method.

    ``level="2d"`` averages per-slice scores (the 18-configuration study's unit), ``"3d"`` per-volume ones.
    Bars: method (V/A/L) within backbone x scope groups. Error bars (seaborn's 95 % CI over the rows) only
    when the rows come from at least ``min_n`` test volumes (default: the statistics' minimum n): slices of
    two volumes are not 24 independent samples, and a CI drawn from them pretends to a precision the run
    does not have. The panel title says which it drew.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .stats import DEFAULT_MIN_N

    min_n = DEFAULT_MIN_N if min_n is None else min_n
    frame = results[(results["slice"] >= 0) if level == "2d" else (results["slice"] == -1)]
    frame = frame[frame["metric"].isin(metrics)].copy()
    if frame.empty:
        raise ValueError(f"no {level} rows with metrics {list(metrics)} to plot")
    frame["group"] = frame["backbone"] + "\n" + frame["scope"].str.replace("encoder_decoder", "En/Decoder") \
        .str.replace("decoder", "Decoder")
    if "mode" in frame and frame["mode"].nunique() > 1:  # one group per mode: never average box and automatic
        frame["group"] = frame["group"] + "\n" + frame["mode"].astype(str)
    n_volumes = frame.groupby(["dataset", "subject"]).ngroups
    with_ci = n_volumes >= min_n
    unit = "slices" if level == "2d" else "volumes"
    interval = f"95 % CI over {unit}" if with_ci else f"no CI: n = {n_volumes} volume(s) < {min_n}"
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4.2), squeeze=False)
    fig.suptitle(grid_bars_title(frame, level), fontsize=9)
    for i, (ax, metric) in enumerate(zip(axes[0], metrics)):
        sns.barplot(data=frame[frame["metric"] == metric], x="group", y="value", hue="peft",
                    hue_order=[m for m in METHODS if m in set(frame["peft"])],
                    errorbar=("ci", 95) if with_ci else None, ax=ax)
        ax.set_title(f"test {metric.upper()} ({level}, mean; {interval})", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        if i < len(metrics) - 1:
            ax.get_legend().remove()
        else:
            ax.legend(title="method", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_validation_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]]):
    """Figure-5 analogue: validation Dice per epoch (epoch 0 = before fine-tuning) for each configuration."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, history in histories.items():
        epochs = [row["epoch"] for row in history]
        ax.plot(epochs, [row["val_dice"] for row in history], marker="o", label=name)
    ax.set_xlabel("epoch (0 = pretrained, before fine-tuning)")
    ax.set_ylabel("validation Dice (2D, mean over items)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_structure_comparison(table: pd.DataFrame, columns: Sequence[str], title: str = ""):
    """Grouped bars per structure of the mean 3D Dice of the given columns of :func:`compare_structures`."""
    import matplotlib.pyplot as plt

    import seaborn as sns

    long = table[list(columns)].reset_index().melt(id_vars="structure", var_name="method", value_name="dice")

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * table.shape[0] + 2), 3.8))
    sns.barplot(data=long, x="structure", y="dice", hue="method", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test Dice (3D, mean over volumes)")
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- starting weights
def _base_init(inits: Sequence[str]) -> str:
    """The reference starting point of a comparison: the model's own weights when present, else the first."""
    return next((i for i in ("litemedsam", "sam", "pretrained", "") if i in inits), inits[0])


def _metric_rows(results: pd.DataFrame, metric: str, level: str, purpose: str) -> pd.DataFrame:
    """The rows of ``metric`` at ``level`` (``3d``: per volume, else per slice); an error says what they were for."""
    frame = results[(results["metric"] == metric) & ((results["slice"] == -1) if level == "3d"
                                                     else (results["slice"] >= 0))].copy()
    if frame.empty:
        raise ValueError(f"no {level} rows of metric {metric!r} {purpose}")
    return frame


def _configuration_names(frame: pd.DataFrame, separator: str) -> pd.Series:
    """``backbone-scope-peft`` per row, plus the training mode when the rows hold several: a box-prompted
    and a prompt-free model of the same configuration are two models, never averaged together."""
    names = frame["backbone"].astype(str) + separator + frame["scope"].astype(str) + "-" + frame["peft"].astype(str)
    if "mode" in frame and frame["mode"].nunique() > 1:
        names = names + " (" + frame["mode"].astype(str) + ")"
    return names


def compare_inits(results: pd.DataFrame, metric: str = "dice", level: str = "3d") -> pd.DataFrame:
    """Per configuration (backbone-scope-peft), the mean test ``metric`` from each starting weight, and the difference.

    The paper's Figures 6-8 analogue as a table: ``<init> - <base>`` > 0 means starting from
    ``<init>`` helped that configuration. Only subjects scored from every init of a configuration
    are used (paired on the same volumes); ``n`` counts them.
    """
    frame = _metric_rows(results, metric, level, "to compare starting weights on")
    frame["configuration"] = _configuration_names(frame, "-")
    inits = list(pd.unique(frame["init"].astype(str)))
    base = _base_init(inits)
    per_subject = frame.groupby(["configuration", "init", "subject"])["value"].mean().reset_index()
    records = []
    for configuration, rows in per_subject.groupby("configuration", sort=False):
        wide = rows.pivot(index="subject", columns="init", values="value").dropna()
        record = {"configuration": configuration, "n": len(wide)}
        for init in inits:
            if init in wide:
                record[init] = wide[init].mean()
        for init in inits:
            if init != base and init in wide and base in wide:
                record[f"{init} - {base}"] = (wide[init] - wide[base]).mean()
        records.append(record)
    table = pd.DataFrame.from_records(records).set_index("configuration")
    table.attrs.update(base=base, metric=metric, level=level)
    return table


def plot_init_comparison(results: pd.DataFrame, metric: str = "dice", level: str = "3d"):
    """Bars per configuration, one per starting weight; the title (dataset, mode, n) is read from the rows shown."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = _metric_rows(results, metric, level, "to plot")
    frame["configuration"] = _configuration_names(frame, "\n")
    per_subject = frame.groupby(["configuration", "init", "subject"])["value"].mean().reset_index()
    inits = list(pd.unique(frame["init"].astype(str)))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * per_subject["configuration"].nunique() + 2.5), 3.8))
    sns.barplot(data=per_subject, x="configuration", y="value", hue="init", hue_order=inits, errorbar=None,
                palette="colorblind", ax=ax)
    sns.stripplot(data=per_subject, x="configuration", y="value", hue="init", hue_order=inits, dodge=True,
                  palette="colorblind", edgecolor="black", linewidth=0.5, legend=False, ax=ax)
    from .report.conditions import data_description, modes_text

    ax.set_title(f"test {metric} ({level}) by starting weights: {data_description(frame, 'test volumes')}\n"
                 f"{modes_text(frame)}; points = subjects, bars = mean")
    ax.set_xlabel("")
    ax.set_ylabel(f"{metric} ({level}, mean over subjects)")
    if metric in ("dice", "nsd"):
        ax.set_ylim(0, 1)
    ax.legend(title="init", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
