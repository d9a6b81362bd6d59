"""The annotation session without a GUI: one volume, a slice, a structure, clicks and a box, the mask
and its Dice after every change, and a scripted replay of a student's clicks.

:class:`InteractiveSegmenter` is the state of one session, so the tests, the scripted fallback
(:func:`run_scripted_session`) and the click viewer (:mod:`.viewer`) all drive the same logic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import prompts as P
from ..metrics import dice
from ..models import Embedding, Predictor
from .simulate import SELECTIONS, correction_click, draw_prompts, pick_candidates, prompt_rng

__all__ = ["SegmentationState", "InteractiveSegmenter", "Action", "demo_actions", "apply_action",
           "run_scripted_session"]


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
            index = pick_candidates([candidates], [ious], gt, self.selection)[0]
            mask, iou = candidates[index], float(ious[index])
        return SegmentationState(mask, dice(mask, gt), iou, self.slice_index, self.structure, list(self.points),
                                 self.box)

    def correction_click(self, mask: np.ndarray) -> tuple[float, float, bool] | None:
        """Where a careful annotator clicks next; see :func:`correction_click`."""
        return correction_click(mask, self.ground_truth)


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
        point = draw_prompts(gt, "point_deep", prompt_rng(seed, "demo", z, name, "point_deep"), max_components=1)[0]
        box = P.noisy_box(P.box_from_mask(gt), prompt_rng(seed, "demo", z, name, "box_noisy"), gt.shape,
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
