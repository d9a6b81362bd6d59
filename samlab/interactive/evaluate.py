"""Decoding and scoring: every simulated prompt of every structure, slice, draw and model, decoded
once and scored in 2D.

**Results encoding** (tidy schema of :mod:`samlab.results`): ``method = "interactive"``,
``prompt = "<kind>|<selection>"`` with kind ``box_noisy`` or ``point_deep`` (e.g.
``"point_deep|oracle"``), ``slice`` = the z index (2D metrics per slice, as the paper evaluates
2D images), ``seed`` = the draw's seed (``seed + draw``), ``backbone`` = the registry model,
``scope``/``peft`` = the fine-tuning configuration of a notebook-04 checkpoint (empty for the
released weights). Each structure on a slice is one measurement over the union of its components'
masks; components beyond ``max_components`` get no prompt and count as missed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..metrics import evaluate_masks
from ..models import Embedding, Predictor
from ..results import make_rows, to_frame
from .models import ModelEntry
from .simulate import PROMPT_KINDS, SELECTIONS, draw_prompts, prompt_label, prompt_rng, select_slices, select_union

if TYPE_CHECKING:  # the one case Protocol (zeroshot's); a type only, so no import of a sibling notebook module
    from ..zeroshot import CaseLike

METHOD = "interactive"

__all__ = ["METHOD", "InteractiveResult", "decode_all_outputs", "evaluate_interactive"]


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
    orientation: str = "as_stored",
) -> InteractiveResult:
    """Prompt every structure on the chosen slices with simulated boxes and points; score in 2D.

    Per slice, each model embeds the image once (cached) and decodes every prompt of every
    structure, draw and kind in batches, one decoder pass giving the single-mask output and the
    three multimask candidates together (:func:`decode_all_outputs`). Structures absent from a slice
    get no prompt and no row (nobody clicks on what is not there). ``orientation`` (the run's curation
    setting) is written into every row.
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
                    rng = prompt_rng(draw_seed, case.case_id, z, name, kind)
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
                               "orientation": orientation,
                               **entry.context}
                    rows.extend(make_rows(context, values))
    calls = sum(e.predictor.encoder_calls - calls_before[id(e)] for e in entries)
    return InteractiveResult(to_frame(rows), calls, decoded, slices)
