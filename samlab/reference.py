"""Published numbers the notebooks show beside ours (never used to compute anything).

Source: Nguyen, Liu & Ruan, "Necessity and impact of specialization of large
foundation model for medical segmentation tasks", Med Phys 2024, Table 1
(mean ± sd over 117 test volumes of the Li et al. pelvic MR set). The paper's
"central gland" is mapped to our ``transition_zone`` and "intact prostate" to
``prostate``.
"""
from __future__ import annotations

import pandas as pd

#: The data behind every published Table-1 number, as tables name it beside ours.
TABLE1_DATA = "paper: 117 real MR test volumes (Li et al. pelvic set; Nguyen et al. 2024)"

#: Column order of Table 1: (model, prompt) as the paper names them.
TABLE1_COLUMNS: tuple[tuple[str, str], ...] = (
    ("MedSAM", "oracle"),
    ("MedSAM", "nnU-Net"),
    ("MedSAM", "oracle expanded"),
    ("MedSAM", "nnU-Net expanded"),
    ("LiteMedSAM", "oracle expanded"),
    ("LiteMedSAM refined", "oracle"),
    ("nnU-Net", "none"),
)

_DICE = {
    "bladder": "0.81 0.24 0.80 0.24 0.81 0.24 0.80 0.24 0.78 0.25 0.92 0.17 0.96 0.06",
    "bone": "0.58 0.19 0.57 0.19 0.59 0.18 0.58 0.19 0.51 0.19 0.92 0.14 0.95 0.05",
    "transition_zone": "0.84 0.10 0.80 0.09 0.87 0.09 0.83 0.09 0.80 0.12 0.91 0.08 0.90 0.04",
    "prostate": "0.83 0.09 0.81 0.08 0.84 0.09 0.82 0.08 0.82 0.09 0.90 0.08 0.92 0.04",
    "neurovascular_bundle": "0.29 0.10 0.25 0.10 0.33 0.10 0.28 0.10 0.22 0.12 0.72 0.13 0.71 0.15",
    "obturator_internus": "0.25 0.11 0.24 0.11 0.29 0.11 0.28 0.11 0.10 0.08 0.86 0.12 0.89 0.06",
    "rectum": "0.85 0.12 0.83 0.11 0.86 0.11 0.84 0.11 0.79 0.12 0.91 0.11 0.92 0.05",
    "seminal_vesicle": "0.72 0.16 0.64 0.17 0.74 0.16 0.65 0.18 0.69 0.16 0.81 0.18 0.79 0.12",
}
_HD95 = {
    "bladder": "6.63 6.05 6.68 5.50 6.55 6.17 6.55 5.54 7.53 6.44 2.76 4.70 1.97 2.11",
    "bone": "56.15 13.87 57.34 13.13 55.80 14.09 56.98 13.34 57.37 12.52 3.97 14.11 2.77 11.53",
    "transition_zone": "4.12 3.20 4.53 2.51 3.67 3.27 4.12 2.52 4.74 2.94 2.64 2.78 3.17 1.67",
    "prostate": "6.82 4.12 6.51 3.02 6.83 4.11 6.34 2.35 6.75 3.88 5.57 4.58 3.49 2.85",
    "neurovascular_bundle": "13.55 5.35 13.43 5.73 13.56 5.34 13.39 5.60 13.52 5.47 5.72 6.44 5.49 6.30",
    "obturator_internus": "34.14 5.20 33.66 4.30 34.01 5.33 33.50 4.41 33.69 5.31 5.02 10.68 4.98 5.13",
    "rectum": "8.39 12.47 8.25 8.14 8.26 12.62 8.21 8.20 9.48 11.99 6.03 12.56 5.10 7.11",
    "seminal_vesicle": "6.40 4.31 8.23 6.50 6.30 4.39 8.17 6.65 5.52 3.42 3.39 3.19 4.95 4.96",
}


def paper_pelvic_table1() -> pd.DataFrame:
    """The paper's Table 1 as tidy rows: metric, structure, model, prompt, mean, sd."""
    records = []
    for metric, table in (("dice", _DICE), ("hd95", _HD95)):
        for structure, text in table.items():
            numbers = [float(x) for x in text.split()]
            for (model, prompt), mean, sd in zip(TABLE1_COLUMNS, numbers[0::2], numbers[1::2]):
                records.append(
                    {"metric": metric, "structure": structure, "model": model, "prompt": prompt, "mean": mean, "sd": sd}
                )
    return pd.DataFrame.from_records(records)


def pelvic_table1_wide(metric: str = "dice") -> pd.DataFrame:
    """Table 1 laid out as in the paper: structures x (model, prompt), cells ``mean ± sd``."""
    frame = paper_pelvic_table1()
    frame = frame[frame["metric"] == metric].copy()
    frame["cell"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(frame["mean"], frame["sd"])]
    wide = frame.pivot(index="structure", columns=["model", "prompt"], values="cell")
    return wide[list(TABLE1_COLUMNS)]
