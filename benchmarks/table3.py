"""Trainable-parameter accounting of the 18 fine-tuning configurations vs the paper's Table 3.

Run: ``.venv/bin/python benchmarks/table3.py`` (about a minute on 2 CPU cores; ViT-B/H are built
on the ``meta`` device, so no weights are allocated; ViT-T is built on the CPU).

Every configuration is built with ``samlab.peft.build_config(name, allow_random_init=True,
num_multimask_outputs=2)``: the authors build SAM's mask decoder with ``num_multimask_outputs =
num_cls`` (2 in their prompt-free foreground/background setting), i.e. 3 mask tokens instead of
SAM's 4, and Table 3's totals only add up with that decoder (ViT-B 93.60M = SAM ViT-B's 93.74M
minus one mask token, one hypernetwork MLP and one IoU-head row: 140,321 parameters). The column
``SAM dec`` shows our count with SAM's own decoder (3 multimask outputs, the one a SAM checkpoint
fits).

Where our count differs from Table 3 by more than its rounding, the difference comes from one of
these properties of the authors' code (mazurowski-lab/finetune-SAM), each of which the script
re-adds to our count (column ``paper-code``) to show the number then matches the printed one:

A  ViT-T totals: MobileSAM's TinyViT carries an ImageNet classifier head (LayerNorm(320) +
   Linear(320, 1000) = 321,640 parameters) that SAM's forward never uses. Our ViT-T omits it
   (``samlab.models.vit_t.strip_mobile_sam_classifier_head`` drops it from the checkpoint);
   the paper counts it in every ViT-T total and in ViT-T En/Decoder + Vanilla's trainable count.
B  En/Decoder + Vanilla: the authors' script leaves the prompt encoder trainable (6,220
   parameters); the study keeps SAM's default prompt embeddings (§2.2.2), so we freeze it.
C  ViT-B/H En/Decoder + Adapter: each adapted encoder block of the authors' code also builds a
   third adapter (``Depth_Adapter``) used only by their 3D branch -- in 2D it never runs, but it
   is counted as trainable: 4 blocks x 295,872 (ViT-B) / 820,800 (ViT-H) parameters.
D  ViT-T En/Decoder + Adapter: the authors' TinyViT compares the *stage* index (0..2) with the
   block list [0, 1, 10, 11], so adapters land in every block of the first two attention stages
   (2 x 128-d + 6 x 160-d blocks), not in the first two and last two blocks as the text says
   (2 x 128-d + 2 x 320-d blocks, which is what we do). The paper-code column rebuilds our
   model with ``adapter_blocks=range(8)``.
E  ViT-T En/Decoder + LoRA: the authors' LoRA wrapper unfreezes TinyViT's convolutional stage 0
   (``layers[0]``: two MBConv blocks + patch merging, 98,944 parameters) for MobileSAM; the
   paper says base weights stay fixed under PEFT, so we keep it frozen. After re-adding it a
   residual of 0.01M (1.4 %) remains that we cannot attribute (0.779M vs the printed 0.79M; the
   prompt encoder's 6,220 parameters would close it, but the same rule would break the
   Decoder + LoRA rows, which match at 0.650M).

Rows without a letter match Table 3 to its printed precision (two decimals, in millions).
"""
from __future__ import annotations

import sys
import time
import warnings

from samlab.peft import (
    CONFIGS,
    PAPER_NUM_MULTIMASK_OUTPUTS,
    PAPER_TABLE3,
    build_config,
    count_parameters,
    paper_code_deltas,  # the accounting itself lives in samlab.peft (the report's Table 3 uses it too)
    parse_config,
)


def _device(backbone: str) -> str:
    return "cpu" if backbone == "vit_t" else "meta"


def main() -> int:
    warnings.simplefilter("ignore", FutureWarning)
    start = time.perf_counter()
    header = (
        f"{'configuration':31s} {'ours':>11s} {'paper':>7s} {'ratio':>6s} {'diff%':>7s}"
        f" {'paper-code':>11s} {'diff%':>6s} {'SAM dec':>11s} | {'ours total':>11s} {'paper':>7s}"
        f" {'paper-code':>11s}  notes"
    )
    print("Trainable parameters (M = 1e6) vs Table 3 of finetune-sam-18-configs")
    print(header)
    print("-" * len(header))
    worst_raw, worst_reconciled = 0.0, 0.0
    for name in CONFIGS:
        backbone, _, _ = parse_config(name)
        model = build_config(name, True, device=_device(backbone), num_multimask_outputs=PAPER_NUM_MULTIMASK_OUTPUTS)
        counts = count_parameters(model)
        sam_decoder = count_parameters(build_config(name, True, device=_device(backbone)))
        deltas = paper_code_deltas(name, model)
        paper = PAPER_TABLE3[name]
        ours_tr, ours_tot = counts["trainable"], counts["total"]
        code_tr = ours_tr + sum(d[2] for d in deltas)
        code_tot = ours_tot + sum(d[1] for d in deltas)
        diff = 100.0 * (ours_tr / 1e6 - paper["trainable_m"]) / paper["trainable_m"]
        diff_code = 100.0 * (code_tr / 1e6 - paper["trainable_m"]) / paper["trainable_m"]
        worst_raw = max(worst_raw, abs(diff))
        worst_reconciled = max(worst_reconciled, abs(diff_code))
        rounds = round(code_tr / 1e6, 2) == paper["trainable_m"] and round(code_tot / 1e6, 2) == paper["total_m"]
        notes = ",".join(d[0] for d in deltas) or "-"
        notes += "  (= Table 3 at 2 decimals)" if rounds else "  (residual, see E)"
        print(
            f"{name:31s} {ours_tr:>11,d} {paper['trainable_m']:>6.2f}M {ours_tr / 1e6 / paper['trainable_m']:>6.3f}"
            f" {diff:>+6.1f}% {code_tr:>11,d} {diff_code:>+5.1f}% {sam_decoder['trainable']:>11,d} |"
            f" {ours_tot:>11,d} {paper['total_m']:>6.2f}M {code_tot:>11,d}  {notes}"
        )
    print("-" * len(header))
    print(f"largest |diff| ours vs paper: {worst_raw:.1f} %; after re-adding the paper-code items A-E: "
          f"{worst_reconciled:.1f} %")
    print("ours: samlab.peft with the paper's 2-output decoder; SAM dec: same with SAM's 3-output decoder;")
    print("paper-code: ours + the items of the authors' code listed in this script's docstring (A-E).")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
