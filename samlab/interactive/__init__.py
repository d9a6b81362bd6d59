"""Interactive segmentation: realistic box/point prompts, mask selection rules, and a click viewer.

Two jobs, one idea (a person, not a detector, supplies the prompt):

* :func:`evaluate_interactive` measures what a SAM-family model gives an annotator who draws an
  imprecise box or clicks once inside an object, with prompts simulated as in the
  18-configuration study (Gu et al., §2.3, §4.5). Several seeded draws per slice and structure;
  the same draws for every model, so comparisons are paired.
* :class:`InteractiveSegmenter` is the state of one annotation session (slice, structure, clicks,
  box) with no GUI in it, so tests and the scripted fallback drive it exactly as a student's clicks
  do; :class:`InteractiveViewer` only wires ipywidgets + ipympl events to its methods.

One file per job, each importing only the ones above it in this list:

========================  ====================================================================
``simulate``              the simulated annotator: slices, noisy boxes / deep points, the three
                          mask selection rules (single, confidence, oracle), corrective clicks
``models``                registry models and notebook 04's fine-tuned checkpoints as prompted models
``evaluate``              decoding every prompt once and scoring it in 2D (the results encoding)
``summary``               tables and paired tests on the results (``box_vs_point_tests``)
``session``               the GUI-free annotation session and its scripted replay
``viewer``                the ipywidgets click viewer and the front-end detection
``corrective3d``          the 3D corrective loop: one 3D box, corrections on the worst slice, NoC
``plots``                 the notebook's figures
========================  ====================================================================
"""
from __future__ import annotations

from .corrective3d import CorrectiveResult, CorrectiveTrace, clicks_curve, corrective_loop, noc_table, run_corrective
from .evaluate import METHOD, InteractiveResult, decode_all_outputs, evaluate_interactive
from .models import (ModelEntry, build_model_entries, find_finetuned_checkpoints, load_finetuned,
                     parse_finetuned_key, same_encoder)
from .plots import plot_clicks_to_target, plot_difference_heatmap, plot_prompt_comparison, plot_session
from .session import (Action, InteractiveSegmenter, SegmentationState, apply_action, demo_actions,
                      run_scripted_session)
from .simulate import (PROMPT_KINDS, SELECTIONS, busiest_slice, correction_click, demo_structures, draw_prompts,
                       pick_candidates, prompt_label, prompt_rng, select_slices, select_union, split_prompt_label)
from .summary import (PAIR_ON, box_vs_point_tests, difference_table, model_labels, selection_gap, summarize,
                      with_prompt_parts)
from .viewer import InteractiveViewer, enable_widget_backend, widgets_available

__all__ = [
    "PROMPT_KINDS",
    "SELECTIONS",
    "METHOD",
    "PAIR_ON",
    "ModelEntry",
    "InteractiveResult",
    "InteractiveSegmenter",
    "InteractiveViewer",
    "SegmentationState",
    "Action",
    "prompt_label",
    "split_prompt_label",
    "prompt_rng",
    "select_slices",
    "busiest_slice",
    "demo_structures",
    "draw_prompts",
    "select_union",
    "pick_candidates",
    "correction_click",
    "decode_all_outputs",
    "evaluate_interactive",
    "parse_finetuned_key",
    "find_finetuned_checkpoints",
    "load_finetuned",
    "build_model_entries",
    "same_encoder",
    "model_labels",
    "with_prompt_parts",
    "selection_gap",
    "summarize",
    "difference_table",
    "box_vs_point_tests",
    "demo_actions",
    "apply_action",
    "run_scripted_session",
    "widgets_available",
    "enable_widget_backend",
    "plot_prompt_comparison",
    "plot_difference_heatmap",
    "plot_session",
    "plot_clicks_to_target",
    "CorrectiveTrace",
    "CorrectiveResult",
    "corrective_loop",
    "run_corrective",
    "noc_table",
    "clicks_curve",
]
