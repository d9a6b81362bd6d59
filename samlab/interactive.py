"""Interactive segmentation: realistic box/point prompts, mask selection rules, and a click viewer.

Two jobs, one idea (a person, not a detector, supplies the prompt):

* :func:`evaluate_interactive` measures what a SAM-family model gives an annotator who draws an
  imprecise box or clicks once inside an object. Prompts are simulated as in the 18-configuration
  study (Gu et al., §2.3, §4.5): per connected component of the structure on a slice, the tight box
  with Gaussian noise on every coordinate (sd 10 % of the box side, at most 20 px;
  :func:`samlab.prompts.noisy_box`), or one point drawn among the pixels deeper than the median
  distance to the edge (:func:`samlab.prompts.sample_deep_point`). Several seeded draws per slice
  and structure; the same draws for every model, so comparisons are paired.

* :class:`InteractiveSegmenter` is the state of one annotation session (slice, structure, clicks,
  box) with no GUI in it, so tests and the scripted fallback drive it exactly as a student's clicks
  do; :class:`InteractiveViewer` only wires ipywidgets + ipympl events to its methods.

**Selection rules** (why three): SAM's decoder returns three candidate masks (multimask output)
plus a predicted IoU for each, or one mask from a separate output token (single-mask output).

* ``single`` -- the single-mask output token; the mode LiteMedSAM and MedSAM were trained in
  (box prompts, ``multimask_output=False``).
* ``confidence`` -- of the three candidates, the one with the highest predicted IoU (the paper's
  "H = highest confidence").
* ``oracle`` -- the candidate with the best Dice against the ground truth (the paper's "O = oracle
  mode": what an annotator who picks the best of three would get). With several components, the
  oracle searches every combination of one candidate per component (3**k, k <= ``max_components``)
  for the best Dice of their union, so oracle >= confidence holds for every slice by construction;
  it need not beat ``single``, which is a different output.

**Results encoding** (tidy schema of :mod:`samlab.results`): ``method = "interactive"``,
``prompt = "<kind>|<selection>"`` with kind ``box_noisy`` or ``point_deep`` (e.g.
``"point_deep|oracle"``), ``slice`` = the z index (2D metrics per slice, as the paper evaluates
2D images), ``seed`` = the draw's seed (``seed + draw``), ``backbone`` = the registry model,
``scope``/``peft`` = the fine-tuning configuration of a notebook-04 checkpoint (empty for the
released weights). Each structure on a slice is one measurement over the union of its components'
masks; components beyond ``max_components`` get no prompt and count as missed.
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import prompts as P
from .metrics import dice, evaluate_masks
from .models import Embedding, EmbeddingCache, LoadedModel, Predictor, load_model
from .models.registry import CheckpointError, file_sha256, list_models
from .results import make_rows, to_frame

PromptKind = Literal["box_noisy", "point_deep"]
Selection = Literal["single", "confidence", "oracle"]
PROMPT_KINDS: tuple[str, ...] = ("box_noisy", "point_deep")
SELECTIONS: tuple[str, ...] = ("single", "confidence", "oracle")
METHOD = "interactive"

__all__ = [
    "PROMPT_KINDS",
    "SELECTIONS",
    "ModelEntry",
    "InteractiveResult",
    "InteractiveSegmenter",
    "InteractiveViewer",
    "SegmentationState",
    "Action",
    "prompt_label",
    "split_prompt_label",
    "select_slices",
    "busiest_slice",
    "demo_structures",
    "draw_prompts",
    "select_union",
    "decode_all_outputs",
    "evaluate_interactive",
    "find_finetuned_checkpoints",
    "load_finetuned",
    "build_model_entries",
    "widgets_available",
    "enable_widget_backend",
    "demo_actions",
    "run_scripted_session",
    "correction_click",
    "plot_prompt_comparison",
    "plot_difference_heatmap",
    "plot_session",
]


class CaseLike(Protocol):
    case_id: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


# --------------------------------------------------------------------------- labels and seeds


def prompt_label(kind: str, selection: str) -> str:
    """``("point_deep", "oracle")`` -> ``"point_deep|oracle"`` (the results' ``prompt`` column)."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; choose from {list(PROMPT_KINDS)}")
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection rule {selection!r}; choose from {list(SELECTIONS)}")
    return f"{kind}|{selection}"


def split_prompt_label(label: str) -> tuple[str, str]:
    """Inverse of :func:`prompt_label`."""
    kind, _, selection = str(label).partition("|")
    if kind not in PROMPT_KINDS or selection not in SELECTIONS:
        raise ValueError(f"{label!r} is not an interactive prompt label like 'box_noisy|confidence'")
    return kind, selection


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode())


def _rng(draw_seed: int, case_id: str, z: int, structure: str, kind: str) -> np.random.Generator:
    """One generator per (draw, case, slice, structure, prompt kind).

    Keyed by names, not positions, so a prompt does not change when other models, structures or
    prompt kinds are added to a run: every model sees the same draws (paired comparisons).
    """
    return np.random.default_rng([draw_seed, _stable_id(case_id), int(z), _stable_id(structure), _stable_id(kind)])


# --------------------------------------------------------------------------- prompts and selection


def select_slices(labels: np.ndarray, structures: Mapping[str, Sequence[int]], n: int | None) -> list[int]:
    """``n`` slices evenly spaced among those holding any evaluation structure (all of them for ``None``)."""
    values = sorted({int(v) for vals in structures.values() for v in vals})
    present = np.isin(labels, values).reshape(labels.shape[0], -1).any(axis=1)
    labelled = np.flatnonzero(present)
    if n is None or len(labelled) <= n:
        return labelled.tolist()
    picks = np.linspace(0, len(labelled) - 1, n).round().astype(int)
    return sorted({int(labelled[i]) for i in picks})


def busiest_slice(labels: np.ndarray, structures: Mapping[str, Sequence[int]]) -> int:
    """The slice holding the most evaluation structures (ties: the most labelled pixels) -- a demo slice."""
    counts = np.stack([np.isin(labels, tuple(v)).reshape(labels.shape[0], -1).any(axis=1)
                       for v in structures.values()]).sum(axis=0)
    area = np.isin(labels, sorted({int(v) for vals in structures.values() for v in vals})).sum(axis=(1, 2))
    return int(np.lexsort((-area, -counts))[0])


def demo_structures(labels2d: np.ndarray, structures: Mapping[str, Sequence[int]], n: int = 3) -> list[str]:
    """Structures to demonstrate on one slice: one-piece objects first (largest first), then one
    multi-component object as the instructive failure (one box must then span both sides)."""
    present = {name: np.isin(labels2d, tuple(v)) for name, v in structures.items()}
    present = {name: m for name, m in present.items() if m.any()}
    pieces = {name: len(P.connected_components(m)) for name, m in present.items()}
    by_area = sorted(present, key=lambda name: -int(present[name].sum()))
    single = [name for name in by_area if pieces[name] == 1]
    multi = [name for name in by_area if pieces[name] > 1]
    picks = single[: max(n - 1, 1)] + multi[:1] if multi else single[:n]
    return (picks + [name for name in by_area if name not in picks])[:n]


def draw_prompts(
    mask2d: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    max_components: int = 4,
    box_noise_fraction: float = 0.1,
    box_noise_cap_px: float = 20.0,
) -> list[np.ndarray]:
    """One simulated prompt per connected component (largest ``max_components`` first).

    ``box_noisy``: ``(x0, y0, x1, y1)`` arrays; ``point_deep``: ``(x, y)`` arrays. Empty mask -> ``[]``.
    """
    if kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; choose from {list(PROMPT_KINDS)}")
    if max_components < 1:
        raise ValueError(f"max_components must be >= 1, got {max_components}")
    out = []
    for component in P.connected_components(mask2d)[:max_components]:
        if kind == "box_noisy":
            box = P.box_from_mask(component)
            out.append(P.noisy_box(box, rng, component.shape, fraction=box_noise_fraction, cap=box_noise_cap_px))
        else:
            out.append(P.sample_deep_point(component, rng))
    return out


def _dice_counts(p: np.ndarray, g: np.ndarray, g_count: int) -> float:
    sp = int(np.count_nonzero(p))
    if sp + g_count == 0:
        return 1.0
    return 2.0 * np.count_nonzero(p & g) / (sp + g_count)


def select_union(
    candidates: Sequence[np.ndarray],
    iou: Sequence[np.ndarray],
    gt: np.ndarray,
    rule: str,
) -> np.ndarray:
    """Union over components of one candidate mask each, chosen by ``rule``.

    ``candidates[j]``: (M, H, W) boolean candidates of component j (M = 3 for multimask, 1 for
    single); ``iou[j]``: their (M,) predicted IoUs. ``single`` takes candidate 0, ``confidence``
    the highest predicted IoU per component, ``oracle`` the combination whose union has the best
    Dice against ``gt`` (exhaustive; ties go to the first combination in lexicographic order).
    """
    gt = np.asarray(gt, dtype=bool)
    if not len(candidates):
        return np.zeros_like(gt)
    if len(candidates) != len(iou):
        raise ValueError(f"got {len(candidates)} candidate sets but {len(iou)} IoU vectors")
    stacks = [np.asarray(c, dtype=bool).reshape(-1, *gt.shape) for c in candidates]
    picks = _pick(stacks, iou, gt, rule)
    return np.logical_or.reduce([s[i] for s, i in zip(stacks, picks)])


def _pick(stacks: Sequence[np.ndarray], iou: Sequence[np.ndarray], gt: np.ndarray, rule: str) -> list[int]:
    """Index of the chosen candidate per component (see :func:`select_union`)."""
    if rule == "single":
        picks = [0] * len(stacks)
    elif rule == "confidence":
        picks = [int(np.argmax(np.asarray(v).reshape(-1))) for v in iou]
    elif rule == "oracle":
        g_count = int(np.count_nonzero(gt))
        best, picks = -1.0, None
        for combo in itertools.product(*(range(len(s)) for s in stacks)):
            union = np.logical_or.reduce([s[i] for s, i in zip(stacks, combo)])
            score = _dice_counts(union, gt, g_count)
            if score > best:
                best, picks = score, list(combo)
    else:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {list(SELECTIONS)}")
    return picks


# --------------------------------------------------------------------------- models


@dataclass
class ModelEntry:
    """A predictor plus the results columns that name it (backbone, scope, peft, init)."""

    label: str
    predictor: Predictor
    context: dict[str, str]


class _SharedEncoderPredictor(Predictor):
    """A predictor whose embeddings are cached under another model's namespace.

    For a decoder-only fine-tuned model the image encoder is the base model's, bit for bit, so
    its embeddings are the base's and need not be computed twice.
    """

    def __init__(self, model: LoadedModel, namespace: str, device: str | torch.device = "cpu",
                 cache: EmbeddingCache | None = None):
        super().__init__(model, device=device, cache=cache)
        self._namespace = namespace

    @property
    def cache_namespace(self) -> str:
        return self._namespace


_CONFIG_RE = re.compile(r"^(?P<model>[a-z0-9_]+)-(?P<scope>decoder|encoder_decoder)-(?P<method>vanilla|adapter|lora)$")


def parse_finetuned_key(key: str) -> tuple[str, str, str]:
    """``"litemedsam-decoder-lora"`` -> ``("litemedsam", "decoder", "lora")``, with a clear error."""
    match = _CONFIG_RE.match(key)
    if not match or match["model"] not in list_models():
        raise ValueError(
            f"fine-tuned checkpoint key {key!r} must be '<model>-<scope>-<method>' with model in "
            f"{list_models()}, scope decoder|encoder_decoder, method vanilla|adapter|lora "
            "(e.g. 'litemedsam-decoder-lora')"
        )
    return match["model"], match["scope"], match["method"]


_RUN_FOLDER_RE = re.compile(r"^(?P<key>.+)-[0-9a-f]{10}$")


def find_finetuned_checkpoints(run_root: str | os.PathLike) -> dict[str, str]:
    """Notebook 04's selected models in a run directory, keyed ``<model>-<scope>-<method>``.

    Notebook 04 trains each configuration into ``checkpoints/finetune/<config>-<settings hash>/``
    (:func:`samlab.finetune.checkpoint_dir`) and keeps the validation-selected model as
    ``best.pt``. When one configuration was trained with several settings, the newest ``best.pt``
    wins. Returns ``{}`` when there are none (the notebook then prints a note and goes on).
    """
    folder = Path(run_root) / "checkpoints" / "finetune"
    found: dict[str, Path] = {}
    if folder.is_dir():
        for best in folder.glob("*/best.pt"):
            match = _RUN_FOLDER_RE.match(best.parent.name)
            if not match:
                continue
            try:
                parse_finetuned_key(match["key"])
            except ValueError:
                continue
            key = match["key"]
            if key not in found or best.stat().st_mtime > found[key].stat().st_mtime:
                found[key] = best
    return {k: str(v) for k, v in sorted(found.items())}


def load_finetuned(key: str, checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
                   base_checkpoint: str | os.PathLike | None = None) -> LoadedModel:
    """Rebuild a notebook-04 model for prompting: base weights, the recorded PEFT, the trained tensors.

    ``checkpoint`` is a samlab training checkpoint (``best.pt``; it holds only the trained
    tensors, see :mod:`samlab.train.checkpoint`). The model is rebuilt with
    :func:`samlab.finetune.build_model` and the PEFT options recorded in the checkpoint; the
    base weights must be those it was trained from (SHA-256 check). A prompt-free (automatic
    mode) checkpoint is refused: its decoder no longer answers prompts.
    """
    from .finetune import GridConfig, build_model
    from .train.checkpoint import load_checkpoint, load_trainable_state

    name, scope, method = parse_finetuned_key(key)
    path = Path(checkpoint).expanduser()
    payload = load_checkpoint(path)
    meta = payload.get("meta") or {}
    if meta.get("mode", "box") != "box":
        raise CheckpointError(f"{path} was trained in {meta.get('mode')!r} mode (prompt-free); "
                              "interactive prompting needs a box-mode model")
    recorded = meta.get("peft") or {}
    if recorded and (recorded.get("method"), recorded.get("scope")) != (method, scope):
        raise CheckpointError(f"{path} holds a {recorded.get('scope')}/{recorded.get('method')} model, "
                              f"not {key}")
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items()
               if k in ("rank", "lora_alpha", "adapter_ratio", "adapter_scale", "adapter_blocks",
                        "lora_train_decoder_heads") and v is not None}
    loaded = build_model(GridConfig(name, scope, method), "box", checkpoint=base_checkpoint, device="cpu",
                         seed=int(meta.get("seed", 0)), **options)
    expected = meta.get("weights_sha256")
    if expected and loaded.sha256 != expected:
        raise CheckpointError(f"{path} was trained from base weights {expected[:12]}…, but the base model "
                              f"loaded here has {str(loaded.sha256)[:12]}… (pass the same base checkpoint)")
    load_trainable_state(loaded.module, payload["model"], path)
    loaded.module.eval().to(device)
    return LoadedModel(spec=loaded.spec, module=loaded.module, weights=f"finetuned:{path}", sha256=file_sha256(path))


def build_model_entries(
    models: Sequence[str],
    checkpoints: Mapping[str, str] | None = None,
    allow_random_init: bool = False,
    finetuned: Mapping[str, str] | None = None,
    device: str | torch.device = "cpu",
    cache: EmbeddingCache | None = None,
) -> list[ModelEntry]:
    """Registry models (released or given weights) followed by notebook-04 fine-tuned checkpoints."""
    checkpoints, entries = dict(checkpoints or {}), []
    bases: dict[str, Predictor] = {}
    for name in models:
        loaded = load_model(name, checkpoint=checkpoints.get(name), allow_random_init=allow_random_init, device=device)
        bases[name] = predictor = Predictor(loaded, device=device, cache=cache)
        entries.append(ModelEntry(name, predictor, {"backbone": name, "init": loaded.init}))
    for key, path in dict(finetuned or {}).items():
        name, scope, method = parse_finetuned_key(key)
        loaded = load_finetuned(key, path, device=device, base_checkpoint=checkpoints.get(name))
        base = bases.get(name) or Predictor(load_model(name, checkpoint=checkpoints.get(name)), device="cpu")
        if same_encoder(loaded.module, base.module):  # decoder-only tuning: reuse the base's embeddings
            predictor: Predictor = _SharedEncoderPredictor(loaded, base.cache_namespace, device=device, cache=cache)
        else:
            predictor = Predictor(loaded, device=device, cache=cache)
        entries.append(ModelEntry(key, predictor, {"backbone": name, "scope": scope, "peft": method,
                                                   "init": base.model.init}))
    return entries


def same_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models' image encoders hold identical tensors (so their embeddings are identical)."""
    sa, sb = a.image_encoder.state_dict(), b.image_encoder.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# --------------------------------------------------------------------------- evaluation


@dataclass
class InteractiveResult:
    """Tidy rows plus bookkeeping of one evaluation run."""

    results: pd.DataFrame
    encoder_calls: int = 0
    prompts_decoded: int = 0
    slices: dict[str, list[int]] = field(default_factory=dict)


@torch.no_grad()
def decode_all_outputs(
    predictor: Predictor,
    embedding: Embedding,
    boxes: np.ndarray | None = None,
    points: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every output token of the mask decoder in one pass: ``(logits (N, 4, H, W), iou (N, 4))``.

    Token 0 is the single-mask output, tokens 1-3 the multimask candidates. SAM's decoder always
    computes all four and :meth:`Predictor.decode` keeps one group; asking for both groups
    through it would run the decoder twice, and the decoder is what this evaluation spends its
    time on. Same prompt mapping and post-processing as :meth:`Predictor.decode` (a test checks
    that both give the same masks).
    """
    geometry = embedding.geometry
    sx, sy = geometry.scale_xy()
    scale = np.array([sx, sy], dtype=np.float32)
    device = predictor.device
    box_t = pts = None
    if boxes is not None:
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 2, 2) * scale
        box_t = torch.from_numpy(b.reshape(-1, 1, 4)).to(device)
    if points is not None:
        q = np.asarray(points, dtype=np.float32)
        q = (q[None] if q.ndim == 2 else q) * scale
        labels = np.ones(q.shape[:2]) if point_labels is None else np.asarray(point_labels).reshape(q.shape[:2])
        pts = (torch.from_numpy(np.ascontiguousarray(q)).to(device), torch.as_tensor(labels, device=device))
    if box_t is None and pts is None:
        raise ValueError("decode_all_outputs needs boxes or points")
    module = predictor.module
    sparse, dense = module.prompt_encoder(points=pts, boxes=box_t, masks=None)
    low_res, iou = module.mask_decoder.predict_masks(
        image_embeddings=embedding.features,
        image_pe=module.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )
    logits = predictor.postprocess(low_res, geometry)
    return logits.cpu().numpy(), iou.cpu().numpy()


def _decode_chunks(predictor: Predictor, embedding: Embedding, kind: str, prompts: list[np.ndarray],
                   chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Decode many prompts in batches (the decoder repeats the embedding per prompt): masks (N, 4, H, W)."""
    masks, ious = [], []
    for start in range(0, len(prompts), chunk):
        part = np.stack(prompts[start:start + chunk]).astype(np.float32)
        if kind == "box_noisy":
            logits, iou = decode_all_outputs(predictor, embedding, boxes=part)
        else:
            logits, iou = decode_all_outputs(predictor, embedding, points=part[:, None, :],
                                             point_labels=np.ones((len(part), 1)))
        masks.append(logits > 0.0)
        ious.append(iou)
    return np.concatenate(masks), np.concatenate(ious)


def evaluate_interactive(
    entries: Sequence[ModelEntry],
    cases: Sequence[CaseLike],
    structures: Mapping[str, Sequence[int]],
    prompt_kinds: Sequence[str] = PROMPT_KINDS,
    selections: Sequence[str] = SELECTIONS,
    n_draws: int = 3,
    slices_per_case: int | None = 4,
    seed: int = 0,
    max_components: int = 4,
    box_noise_fraction: float = 0.1,
    box_noise_cap_px: float = 20.0,
    metrics: Sequence[str] = ("dice",),
    nsd_tolerance_mm: float = 2.0,
    dataset: str = "",
    progress: bool = True,
) -> InteractiveResult:
    """Prompt every structure on the chosen slices with simulated boxes and points; score in 2D.

    Per slice, each model embeds the image once (cached) and decodes every prompt of every
    structure, draw and kind in batches, one decoder pass giving the single-mask output and the
    three multimask candidates together (:func:`decode_all_outputs`). Structures absent from a slice
    get no prompt and no row (nobody clicks on what is not there).
    """
    if not entries:
        raise ValueError("no models to evaluate (entries is empty)")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    for kind in prompt_kinds:
        prompt_label(kind, "single")
    for rule in selections:
        prompt_label("box_noisy", rule)
    if not structures:
        raise ValueError("structures is empty; map each structure name to its label value(s)")
    rows: list[dict[str, Any]] = []
    calls_before = {id(e): e.predictor.encoder_calls for e in entries}
    decoded = 0
    slices: dict[str, list[int]] = {}
    work = []
    for case in cases:
        if case.image.shape != case.labels.shape:
            raise ValueError(f"case {case.case_id}: image shape {case.image.shape} != labels shape {case.labels.shape}")
        slices[case.case_id] = select_slices(case.labels, structures, slices_per_case)
        work.extend((case, z) for z in slices[case.case_id])
    for case, z in tqdm(work, desc="interactive prompts", disable=not progress):
        spacing2d = tuple(float(s) for s in case.spacing[1:])
        # Simulated prompts of this slice (model independent): (structure, draw_seed, kind) -> prompts.
        gts, requests = {}, {}
        for name, values in structures.items():
            gt = np.isin(case.labels[z], tuple(values))
            if not gt.any():
                continue
            gts[name] = gt
            for draw in range(n_draws):
                draw_seed = seed + draw
                for kind in prompt_kinds:
                    rng = _rng(draw_seed, case.case_id, z, name, kind)
                    requests[(name, draw_seed, kind)] = draw_prompts(
                        gt, kind, rng, max_components, box_noise_fraction, box_noise_cap_px)
        if not requests:
            continue
        for entry in entries:
            embedding = entry.predictor.embed(case.image[z])
            outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for kind in prompt_kinds:
                flat = [p for (n, d, k), ps in requests.items() if k == kind for p in ps]
                if flat:
                    outputs[kind] = _decode_chunks(entry.predictor, embedding, kind, flat)
                    decoded += len(flat)
            offsets = {kind: 0 for kind in prompt_kinds}
            for (name, draw_seed, kind), prompts_ in requests.items():
                start, k = offsets[kind], len(prompts_)
                offsets[kind] += k
                if not k:
                    continue
                masks, ious = outputs[kind]
                for rule in selections:
                    tokens = slice(0, 1) if rule == "single" else slice(1, 4)
                    pred = select_union(list(masks[start:start + k, tokens]), list(ious[start:start + k, tokens]),
                                        gts[name], rule)
                    values = evaluate_masks(pred, gts[name], spacing2d, metrics=metrics,
                                            nsd_tolerance_mm=nsd_tolerance_mm)
                    context = {"dataset": dataset, "subject": case.case_id, "slice": int(z), "structure": name,
                               "method": METHOD, "prompt": prompt_label(kind, rule), "seed": draw_seed,
                               **entry.context}
                    rows.extend(make_rows(context, values))
    calls = sum(e.predictor.encoder_calls - calls_before[id(e)] for e in entries)
    return InteractiveResult(to_frame(rows), calls, decoded, slices)


def selection_gap(results: pd.DataFrame, kind: str, a: str = "oracle", b: str = "confidence",
                  metric: str = "dice") -> pd.DataFrame:
    """Paired per-measurement difference ``a - b`` of two selection rules for one prompt kind."""
    frame = results[results["metric"] == metric]
    keys = ["dataset", "subject", "slice", "structure", "backbone", "scope", "peft", "init", "seed"]
    left = frame[frame["prompt"] == prompt_label(kind, a)].set_index(keys)["value"]
    right = frame[frame["prompt"] == prompt_label(kind, b)].set_index(keys)["value"]
    joined = pd.concat({a: left, b: right}, axis=1).dropna()
    joined["diff"] = joined[a] - joined[b]
    return joined.reset_index()


def summarize(results: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Mean ± sd per model and prompt kind (rows) x selection rule (columns)."""
    frame = results[results["metric"] == metric].copy()
    parts = frame["prompt"].str.split("|", expand=True)
    frame["kind"], frame["selection"] = parts[0], parts[1]
    frame["model"] = _model_labels(frame)
    stats = frame.groupby(["model", "kind", "selection"], sort=False)["value"].agg(["mean", "std", "count"])
    cells = stats.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}" if r["count"] > 1 else f"{r['mean']:.3f}",
                        axis=1)
    table = cells.unstack("selection")
    return table[[s for s in SELECTIONS if s in table.columns]]


def _model_labels(frame: pd.DataFrame) -> pd.Series:
    tuned = (frame["scope"] != "") & (frame["peft"] != "")
    return frame["backbone"].where(~tuned, frame["backbone"] + "-" + frame["scope"] + "-" + frame["peft"])


# --------------------------------------------------------------------------- the annotation session


@dataclass
class SegmentationState:
    """What the viewer shows after a prompt change: the mask, its Dice, and the prompt."""

    mask: np.ndarray
    dice: float
    predicted_iou: float
    slice_index: int
    structure: str
    points: list[tuple[float, float, bool]]
    box: tuple[float, float, float, float] | None

    @property
    def text(self) -> str:
        if not self.points and self.box is None:
            return f"{self.structure}, slice {self.slice_index}: no prompt yet (Dice {self.dice:.3f})"
        return (f"{self.structure}, slice {self.slice_index}: Dice {self.dice:.3f} "
                f"(predicted IoU {self.predicted_iou:.2f}, {int(self.mask.sum())} px)")


class InteractiveSegmenter:
    """One annotation session on a volume: pick a slice and a structure, click, get a mask and its Dice.

    No GUI code: :class:`InteractiveViewer` calls these methods from widget events, the scripted
    fallback and the tests call them directly, so all three exercise the same logic. Every
    prompt change re-decodes the current prompt (box and points together, as SAM allows); the
    slice's embedding is computed once and reused.
    """

    def __init__(
        self,
        predictor: Predictor,
        image: np.ndarray,
        labels: np.ndarray,
        structures: Mapping[str, Sequence[int]],
        selection: str = "single",
        slice_index: int | None = None,
        structure: str | None = None,
    ):
        image, labels = np.asarray(image), np.asarray(labels)
        if image.ndim != 3 or image.shape != labels.shape:
            raise ValueError(f"image and labels must be 3D (z, y, x) of one shape, got {image.shape} and {labels.shape}")
        if not structures:
            raise ValueError("structures is empty; map each structure name to its label value(s)")
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection rule {selection!r}; choose from {list(SELECTIONS)}")
        self.predictor = predictor
        self.image = image
        self.labels = labels
        self.structures = {k: tuple(int(v) for v in vals) for k, vals in structures.items()}
        self.selection = selection
        self.keep_embeddings = 8
        self._embeddings: dict[int, Embedding] = {}
        self.points: list[tuple[float, float, bool]] = []
        self.box: tuple[float, float, float, float] | None = None
        self.structure = structure if structure is not None else self._largest_structure()
        self.set_structure(self.structure)
        z = slice_index if slice_index is not None else int(np.argmax(self._gt_volume().sum(axis=(1, 2))))
        self.slice_index = -1
        self.set_slice(z)

    # -- state changes (each clears the prompt, as a new object needs a new one)
    def _largest_structure(self) -> str:
        sizes = {name: int(np.isin(self.labels, vals).sum()) for name, vals in self.structures.items()}
        return max(sizes, key=sizes.get)

    def _gt_volume(self) -> np.ndarray:
        return np.isin(self.labels, self.structures[self.structure])

    @property
    def ground_truth(self) -> np.ndarray:
        """The current structure's mask on the current slice."""
        return np.isin(self.labels[self.slice_index], self.structures[self.structure])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[1:])  # type: ignore[return-value]

    def set_slice(self, z: int) -> None:
        z = int(z)
        if not 0 <= z < self.image.shape[0]:
            raise ValueError(f"slice index {z} outside the volume (0..{self.image.shape[0] - 1})")
        if z != self.slice_index:
            self.slice_index = z
            if z not in self._embeddings:
                self._embeddings[z] = self.predictor.embed(self.image[z])
                while len(self._embeddings) > self.keep_embeddings:  # ~4 MB each: keep the recent ones
                    self._embeddings.pop(next(iter(self._embeddings)))
        self.clear()

    def set_structure(self, name: str) -> None:
        if name not in self.structures:
            raise ValueError(f"unknown structure {name!r}; available: {list(self.structures)}")
        self.structure = name
        self.clear()

    def clear(self) -> None:
        self.points = []
        self.box = None

    def add_point(self, x: float, y: float, foreground: bool = True) -> None:
        """A click at pixel ``(x, y)``: foreground (include) or background (exclude)."""
        h, w = self.shape
        if not (np.isfinite(x) and np.isfinite(y)) or not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise ValueError(f"point ({x}, {y}) lies outside the {w}x{h} slice")
        self.points.append((float(x), float(y), bool(foreground)))

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """A dragged box, corners in any order; clipped to the slice."""
        h, w = self.shape
        xs = sorted((float(np.clip(x0, 0, w - 1)), float(np.clip(x1, 0, w - 1))))
        ys = sorted((float(np.clip(y0, 0, h - 1)), float(np.clip(y1, 0, h - 1))))
        self.box = (xs[0], ys[0], xs[1], ys[1])

    # -- prediction
    def update(self) -> SegmentationState:
        """Decode the current prompt; returns the mask and its Dice (``samlab.metrics.dice``)."""
        gt = self.ground_truth
        if not self.points and self.box is None:
            mask, iou = np.zeros_like(gt), float("nan")
        else:
            boxes = None if self.box is None else np.array([self.box], dtype=np.float32)
            points = labels = None
            if self.points:
                points = np.array([[(x, y) for x, y, _ in self.points]], dtype=np.float32)
                labels = np.array([[1 if fg else 0 for _, _, fg in self.points]], dtype=np.int64)
            multimask = self.selection != "single"
            out = self.predictor.decode(self._embeddings[self.slice_index], boxes=boxes, points=points,
                                        point_labels=labels, multimask=multimask)
            candidates = out.masks()[0].reshape(-1, *gt.shape)
            ious = np.asarray(out.iou[0]).reshape(-1)
            index = _pick([candidates], [ious], gt, self.selection)[0]
            mask, iou = candidates[index], float(ious[index])
        return SegmentationState(mask, dice(mask, gt), iou, self.slice_index, self.structure, list(self.points),
                                 self.box)

    def correction_click(self, mask: np.ndarray) -> tuple[float, float, bool] | None:
        """Where a careful annotator clicks next; see :func:`correction_click`."""
        return correction_click(mask, self.ground_truth)


def correction_click(mask: np.ndarray, gt: np.ndarray) -> tuple[float, float, bool] | None:
    """The next corrective click: the deepest pixel of the largest error region.

    A missed region (false negative) gets a foreground click, a spurious one (false positive) a
    background click -- the click simulation of SAM's and RITM's interactive training. ``None``
    when the mask is perfect.
    """
    mask, gt = np.asarray(mask, dtype=bool), np.asarray(gt, dtype=bool)
    regions = [(c, True) for c in P.connected_components(gt & ~mask)]
    regions += [(c, False) for c in P.connected_components(mask & ~gt)]
    if not regions:
        return None
    region, foreground = max(regions, key=lambda item: int(item[0].sum()))
    x, y = P.interior_point(region)
    return float(x), float(y), foreground


# --------------------------------------------------------------------------- scripted session


@dataclass(frozen=True)
class Action:
    """One user action: ``slice`` (z), ``structure`` (name), ``point`` (x, y, foreground),
    ``box`` (x0, y0, x1, y1), ``clear``, or ``correct`` (a :func:`correction_click` on the last mask)."""

    kind: Literal["slice", "structure", "point", "box", "clear", "correct"]
    args: tuple = ()

    def describe(self) -> str:
        if self.kind == "point":
            x, y, fg = self.args
            return f"{'foreground' if fg else 'background'} click at ({x:.0f}, {y:.0f})"
        if self.kind == "box":
            return "box ({:.0f}, {:.0f}, {:.0f}, {:.0f})".format(*self.args)
        return f"{self.kind} {' '.join(str(a) for a in self.args)}".strip()


def demo_actions(segmenter: InteractiveSegmenter, structures: Sequence[str] | None = None, seed: int = 0,
                 box_noise_fraction: float = 0.1, box_noise_cap_px: float = 20.0) -> list[Action]:
    """A realistic session on the current slice, the same clicks a student would make.

    Per structure: one deep foreground click, one corrective click; then clear, a noisy box, and
    a corrective click on the box's result. Prompts come from the same simulation as the
    evaluation (:func:`draw_prompts`), so the numbers are comparable.
    """
    z = segmenter.slice_index
    names = list(structures) if structures is not None else [segmenter.structure]
    actions: list[Action] = [Action("slice", (z,))]
    for name in names:
        gt = np.isin(segmenter.labels[z], segmenter.structures[name])
        if not gt.any():
            continue
        point = draw_prompts(gt, "point_deep", _rng(seed, "demo", z, name, "point_deep"), max_components=1)[0]
        box = P.noisy_box(P.box_from_mask(gt), _rng(seed, "demo", z, name, "box_noisy"), gt.shape,
                          fraction=box_noise_fraction, cap=box_noise_cap_px)
        actions += [Action("structure", (name,)), Action("point", (float(point[0]), float(point[1]), True)),
                    Action("correct"), Action("clear"), Action("box", tuple(float(v) for v in box)),
                    Action("correct")]
    return actions


def apply_action(segmenter: InteractiveSegmenter, action: Action, last_mask: np.ndarray | None) -> Action | None:
    """Apply one action; returns it as performed (a ``correct`` becomes the ``point`` it placed),
    or ``None`` for a ``correct`` with nothing left to correct."""
    if action.kind == "slice":
        segmenter.set_slice(*action.args)
    elif action.kind == "structure":
        segmenter.set_structure(*action.args)
    elif action.kind == "point":
        segmenter.add_point(*action.args)
    elif action.kind == "box":
        segmenter.set_box(*action.args)
    elif action.kind == "clear":
        segmenter.clear()
    elif action.kind == "correct":
        click = segmenter.correction_click(last_mask if last_mask is not None else np.zeros(segmenter.shape, bool))
        if click is None:
            return None
        segmenter.add_point(*click)
        return Action("point", click)
    else:
        raise ValueError(f"unknown action {action.kind!r}")
    return action


def run_scripted_session(segmenter: InteractiveSegmenter, actions: Iterable[Action],
                         verbose: bool = True) -> tuple[pd.DataFrame, list[SegmentationState]]:
    """Replay actions (the non-interactive fallback of the viewer); Dice after each prompt change."""
    records, states, last = [], [], None
    for action in actions:
        done = apply_action(segmenter, action, last)
        if done is None or action.kind in ("slice", "structure", "clear"):  # no prompt to decode yet
            continue
        state = segmenter.update()
        last = state.mask
        states.append(state)
        text = ("correction: " if action.kind == "correct" else "") + done.describe()
        records.append({"step": len(records) + 1, "structure": state.structure, "slice": state.slice_index,
                        "action": text, "dice": state.dice, "mask_px": int(state.mask.sum()),
                        "gt_px": int(segmenter.ground_truth.sum())})
        if verbose:
            print(f"step {len(records):2d}  {text:<42s} -> {state.text}")
    return pd.DataFrame.from_records(records), states


# --------------------------------------------------------------------------- widgets


def widgets_available(mode: str = "auto") -> tuple[bool, str]:
    """Decide whether to open the click viewer; returns ``(decision, reason)``.

    ``on``/``off`` force it. ``auto`` (the notebook default) needs three things: an IPython
    *kernel* (not plain python), ``ipympl`` importable, and a front end that renders widgets.
    The kernel cannot ask its front end, so the last one is read from what front ends leave in the
    kernel's environment: Jupyter Server (JupyterLab, Notebook 7) sets ``JPY_SESSION_NAME`` for
    every kernel it starts for a notebook, VS Code defines ``__vsc_ipynb_file__``. Papermill, nbval
    and nbclient start kernels through jupyter_client directly and set neither, so CI takes the
    scripted path. The environment variable ``SAMLAB_WIDGETS=1``/``0`` overrides ``auto``.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"widgets must be 'auto', 'on' or 'off', got {mode!r}")
    if mode == "on":
        return True, "widgets='on': opening the click viewer"
    if mode == "off":
        return False, "widgets='off': running the scripted session instead of the viewer"
    forced = os.environ.get("SAMLAB_WIDGETS", "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"SAMLAB_WIDGETS={forced} decides ({'viewer' if forced == '1' else 'scripted session'})"
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        return False, "IPython is not installed: scripted session"
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False, "not running in a Jupyter kernel: scripted session"
    if not (os.environ.get("JPY_SESSION_NAME") or "__vsc_ipynb_file__" in getattr(shell, "user_ns", {})):
        return False, ("no widget front end detected (papermill / nbval / a console kernel): scripted session; "
                       "set widgets='on' (or SAMLAB_WIDGETS=1) to force the viewer")
    if importlib.util.find_spec("ipympl") is None:  # find_spec: importing ipympl would hook into the kernel
        return False, "ipympl is not installed (pip install ipympl): scripted session"
    return True, "Jupyter front end detected: opening the click viewer"


def enable_widget_backend() -> None:
    """Switch matplotlib to ipympl (``%matplotlib widget``); only call it where a front end exists."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("enable_widget_backend() needs an IPython kernel")
    shell.run_line_magic("matplotlib", "widget")


class InteractiveViewer:
    """ipywidgets + matplotlib wiring around an :class:`InteractiveSegmenter`.

    Slice slider, structure picker, a point/box mode switch and a clear button. In point mode a
    left click adds a foreground point, a right click or shift+click a background point; in box
    mode drag a rectangle (matplotlib ``RectangleSelector``). Every change re-decodes and redraws
    the mask (orange), the ground-truth outline (green) and the Dice. The callbacks
    (``on_click``, ``on_box``, the widget observers) take plain event objects, so tests call them
    without a browser.
    """

    def __init__(self, segmenter: InteractiveSegmenter, figsize: tuple[float, float] = (5.0, 5.0)):
        import ipywidgets as W
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
        from matplotlib.widgets import RectangleSelector

        self.segmenter = segmenter
        with plt.ioff():
            self.fig, self.ax = plt.subplots(figsize=figsize)
        self.ax.set_axis_off()
        z = segmenter.slice_index
        self._image = self.ax.imshow(segmenter.image[z], cmap="gray", interpolation="nearest")
        self._mask = self.ax.imshow(np.zeros((*segmenter.shape, 4)), interpolation="nearest")
        self._gt_contour = None
        (self._fg,) = self.ax.plot([], [], "*", color="lime", markersize=14, markeredgecolor="black")
        (self._bg,) = self.ax.plot([], [], "X", color="red", markersize=11, markeredgecolor="black")
        self._box = Rectangle((0, 0), 0, 0, fill=False, edgecolor="yellow", linewidth=1.5, visible=False)
        self.ax.add_patch(self._box)
        self.slider = W.IntSlider(value=z, min=0, max=segmenter.image.shape[0] - 1, description="slice",
                                  continuous_update=False)
        self.picker = W.Dropdown(options=list(segmenter.structures), value=segmenter.structure, description="structure")
        self.mode = W.ToggleButtons(options=["point", "box"], value="point", description="prompt")
        self.clear_button = W.Button(description="clear prompt")
        self.status = W.HTML()
        self.slider.observe(self.on_slice, names="value")
        self.picker.observe(self.on_structure, names="value")
        self.mode.observe(self.on_mode, names="value")
        self.clear_button.on_click(self.on_clear)
        self.fig.canvas.mpl_connect("button_press_event", self.on_click)
        self.selector = RectangleSelector(self.ax, self.on_box, useblit=False, button=[1], minspanx=2, minspany=2,
                                          spancoords="data", interactive=False)
        self.selector.set_active(False)
        self.state = self.refresh()

    # -- callbacks
    def on_slice(self, change: Mapping[str, Any]) -> None:
        self.segmenter.set_slice(change["new"])
        self.refresh()

    def on_structure(self, change: Mapping[str, Any]) -> None:
        self.segmenter.set_structure(change["new"])
        self.refresh()

    def on_mode(self, change: Mapping[str, Any]) -> None:
        self.selector.set_active(change["new"] == "box")

    def on_clear(self, _button: Any = None) -> None:
        self.segmenter.clear()
        self.refresh()

    def on_click(self, event: Any) -> None:
        """Point mode: button 1 = foreground (background with shift held), button 3 = background."""
        if self.mode.value != "point" or event.inaxes is not self.ax or event.xdata is None:
            return
        button = int(getattr(event, "button", 1) or 1)
        if button not in (1, 3):
            return
        shift = "shift" in str(getattr(event, "key", "") or "")
        self.segmenter.add_point(event.xdata, event.ydata, foreground=(button == 1 and not shift))
        self.refresh()

    def on_box(self, eclick: Any, erelease: Any) -> None:
        if self.mode.value != "box" or None in (eclick.xdata, erelease.xdata):
            return
        self.segmenter.set_box(eclick.xdata, eclick.ydata, erelease.xdata, erelease.ydata)
        self.refresh()

    # -- drawing
    def refresh(self) -> SegmentationState:
        """Re-decode and redraw; returns the state shown."""
        state = self.segmenter.update()
        seg = self.segmenter
        self._image.set_data(seg.image[seg.slice_index])
        self._image.set_clim(float(seg.image[seg.slice_index].min()), float(seg.image[seg.slice_index].max()))
        rgba = np.zeros((*seg.shape, 4))
        rgba[state.mask] = (1.0, 0.55, 0.0, 0.45)
        self._mask.set_data(rgba)
        if self._gt_contour is not None:
            self._gt_contour.remove()
            self._gt_contour = None
        gt = seg.ground_truth
        if gt.any():
            self._gt_contour = self.ax.contour(gt.astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
        fg = [(x, y) for x, y, f in state.points if f]
        bg = [(x, y) for x, y, f in state.points if not f]
        self._fg.set_data([p[0] for p in fg], [p[1] for p in fg])
        self._bg.set_data([p[0] for p in bg], [p[1] for p in bg])
        if state.box is not None:
            x0, y0, x1, y1 = state.box
            self._box.set_bounds(x0, y0, x1 - x0, y1 - y0)
        self._box.set_visible(state.box is not None)
        self.ax.set_title(state.text, fontsize=9)
        self.status.value = f"<b>{state.text}</b>"
        self.fig.canvas.draw_idle()
        self.state = state
        return state

    def widget(self):
        """The assembled widget; the figure canvas is included when it is an ipympl widget."""
        import ipywidgets as W

        parts = [W.HBox([self.slider, self.picker]), W.HBox([self.mode, self.clear_button])]
        if isinstance(self.fig.canvas, W.DOMWidget):
            parts.append(self.fig.canvas)
        parts.append(self.status)
        return W.VBox(parts)


# --------------------------------------------------------------------------- figures


def _with_parts(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    frame = results[results["metric"] == metric].copy()
    parts = frame["prompt"].str.split("|", expand=True)
    frame["kind"], frame["selection"] = parts[0], parts[1]
    frame["model"] = _model_labels(frame)
    return frame


def plot_prompt_comparison(results: pd.DataFrame, metric: str = "dice"):
    """Figure-10 analogue: mean metric (95 % CI over measurements) per prompt kind, hue = selection rule."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = _with_parts(results, metric)
    models = list(pd.unique(frame["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models) + 1, 3.8), sharey=True, squeeze=False)
    order = [s for s in SELECTIONS if s in set(frame["selection"])]
    for ax, model in zip(axes[0], models):
        sns.barplot(data=frame[frame["model"] == model], x="kind", y="value", hue="selection", hue_order=order,
                    order=[k for k in PROMPT_KINDS if k in set(frame["kind"])], errorbar=("ci", 95), ax=ax)
        ax.set_title(model)
        ax.set_xlabel("prompt")
        ax.set_ylabel("Dice (2D)" if metric == "dice" else metric)
        ax.set_ylim(0, 1)
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
        else:
            ax.legend(title="mask chosen by", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def difference_table(results: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Mean paired differences per structure (rows, plus ``all``) for the contrasts of Figures 7/8.

    Columns: ``box - point`` per selection rule, ``oracle - confidence`` per prompt kind, and
    ``<fine-tuned> - <base>`` per fine-tuned model (confidence selection), each on matched
    (subject, slice, structure, draw) measurements of one model.
    """
    frame = _with_parts(results, metric)
    keys = ["subject", "slice", "structure", "seed"]
    columns: dict[str, pd.Series] = {}
    wide = frame.pivot_table(index=["model", *keys], columns=["kind", "selection"], values="value", aggfunc="first")
    for model in pd.unique(frame["model"]):
        sub = wide.loc[model]
        prefix = f"{model}: " if frame["model"].nunique() > 1 else ""
        for rule in SELECTIONS:
            if ("box_noisy", rule) in sub and ("point_deep", rule) in sub:
                columns[f"{prefix}box − point ({rule})"] = sub[("box_noisy", rule)] - sub[("point_deep", rule)]
        for kind in PROMPT_KINDS:
            if (kind, "oracle") in sub and (kind, "confidence") in sub:
                columns[f"{prefix}oracle − confidence ({kind.split('_')[0]})"] = sub[(kind, "oracle")] - sub[(kind, "confidence")]
    base = frame[(frame["scope"] == "") & (frame["peft"] == "")]
    for model in pd.unique(frame.loc[(frame["scope"] != ""), "model"]):
        tuned = frame[frame["model"] == model]
        backbone = tuned["backbone"].iloc[0]
        ref = base[base["backbone"] == backbone]
        for kind in PROMPT_KINDS:
            t = tuned[tuned["prompt"] == prompt_label(kind, "confidence")].set_index(keys)["value"]
            r = ref[ref["prompt"] == prompt_label(kind, "confidence")].set_index(keys)["value"]
            if len(t) and len(r):
                columns[f"{model} − {backbone} ({kind.split('_')[0]})"] = (t - r).dropna()
    if not columns:
        return pd.DataFrame()
    out = {}
    for name, series in columns.items():
        by = series.groupby(level="structure").mean()
        by["all"] = series.mean()
        out[name] = by
    table = pd.DataFrame(out)
    order = [s for s in pd.unique(frame["structure"]) if s in table.index] + ["all"]
    return table.loc[order]


def plot_difference_heatmap(results: pd.DataFrame, metric: str = "dice"):
    """Figures-7/8 analogue: green = the first condition better, red = worse (mean paired difference)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = difference_table(results, metric)
    if table.empty:
        raise ValueError("nothing to contrast: need both prompt kinds or both multimask selection rules")
    fig, ax = plt.subplots(figsize=(1.6 * table.shape[1] + 3, 0.45 * table.shape[0] + 1.8))
    limit = max(float(np.nanmax(np.abs(table.to_numpy()))), 0.05)
    sns.heatmap(table, cmap="RdYlGn", center=0, vmin=-limit, vmax=limit, annot=True, fmt="+.2f", ax=ax,
                cbar_kws={"label": f"mean difference in {metric}"})
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def plot_session(segmenter: InteractiveSegmenter, states: Sequence[SegmentationState], ncols: int = 4):
    """One panel per step of a (scripted) session: image, ground truth (green), mask (orange), prompt."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    nrows = max(1, int(np.ceil(len(states) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (ax, state) in enumerate(zip(axes.flat, states)):
        image = segmenter.image[state.slice_index]
        gt = np.isin(segmenter.labels[state.slice_index], segmenter.structures[state.structure])
        ax.imshow(image, cmap="gray", interpolation="nearest")
        rgba = np.zeros((*gt.shape, 4))
        rgba[state.mask] = (1.0, 0.55, 0.0, 0.5)
        ax.imshow(rgba, interpolation="nearest")
        if gt.any():
            ax.contour(gt.astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
        for x, y, fg in state.points:
            ax.plot(x, y, "*" if fg else "X", color="lime" if fg else "red", markersize=11, markeredgecolor="black")
        if state.box is not None:
            x0, y0, x1, y1 = state.box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.2))
        ax.set_title(f"{i + 1}. {state.structure}: Dice {state.dice:.2f}", fontsize=9)
    fig.tight_layout()
    return fig
