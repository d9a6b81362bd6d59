"""The simulated annotator: which slices and structures get prompted, the noisy box or deep click
it draws, which of the decoder's candidate masks it keeps, and where it clicks to correct.

Prompts are simulated as in the 18-configuration study (Gu et al., §2.3, §4.5): per connected
component of the structure on a slice, the tight box with Gaussian noise on every coordinate (sd
10 % of the box side, at most 20 px; :func:`samlab.prompts.noisy_box`), or one point drawn among
the pixels deeper than the median distance to the edge (:func:`samlab.prompts.sample_deep_point`).
Every draw has its own generator keyed by names (:func:`prompt_rng`), so every model sees the same
draws and comparisons are paired.

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

No model and no torch here: the evaluation (:mod:`.evaluate`) and the click session
(:mod:`.session`) both draw on these rules, so a notebook number and a demo click agree.
"""
from __future__ import annotations

import itertools
from typing import Literal, Mapping, Sequence

import numpy as np

from .. import prompts as P
from ..prompts import prompt_rng

PromptKind = Literal["box_noisy", "point_deep"]
Selection = Literal["single", "confidence", "oracle"]
PROMPT_KINDS: tuple[str, ...] = ("box_noisy", "point_deep")
SELECTIONS: tuple[str, ...] = ("single", "confidence", "oracle")

__all__ = ["PROMPT_KINDS", "SELECTIONS", "prompt_label", "split_prompt_label", "prompt_rng", "select_slices",
           "busiest_slice", "demo_structures", "draw_prompts", "select_union", "pick_candidates",
           "correction_click"]


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
    max_components: int = P.MAX_CLICKS,
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
    if kind == "point_deep":  # the clicks of fine-tuning's point prompts, here one prompt per click
        return list(P.structure_clicks(mask2d, rng, max_components)) if np.asarray(mask2d).any() else []
    return [P.noisy_box(P.box_from_mask(component), rng, component.shape, fraction=box_noise_fraction,
                        cap=box_noise_cap_px)
            for component in P.connected_components(mask2d)[:max_components]]


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
    picks = pick_candidates(stacks, iou, gt, rule)
    return np.logical_or.reduce([s[i] for s, i in zip(stacks, picks)])


def pick_candidates(stacks: Sequence[np.ndarray], iou: Sequence[np.ndarray], gt: np.ndarray, rule: str) -> list[int]:
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


# --------------------------------------------------------------------------- corrective clicks


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
