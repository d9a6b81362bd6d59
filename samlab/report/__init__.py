"""Every table and figure of the study, rebuilt from a run directory's tidy results.

The study's claims live in its tables and figures, and they must be reproducible from the
results files alone (no retraining, no notebook state). Notebook 07 and ``samlab figures``
both call :func:`regenerate`; it reads ``<run_dir>/results/*.parquet`` (the schema of
:mod:`samlab.results`), works with whatever subset exists, and writes paired comparisons,
the papers' tables and figures. One job per module:

* :mod:`.conditions` -- loading results, naming conditions, selecting their rows;
* :mod:`.comparisons` -- which paired comparisons the results allow, run through the one
  test engine in :mod:`samlab.stats`;
* :mod:`.tables` -- condition summary, pelvic Table 1, Table 4 (recommendations), Table 3;
* :mod:`.figures` -- the papers' figures and forest plots (drawn by :mod:`samlab.viz`);
* :mod:`.writer` -- :func:`build_report`, :func:`write_report`, :func:`regenerate`.
"""
from __future__ import annotations

from .comparisons import Comparison, paired_comparison, plan_comparisons, run_comparisons
from .conditions import MEAN_ROW, RESULT_FILES, StudyResults, condition_label, load_results, results_overview, select
from .tables import condition_summary, pelvic_table1, recommendations, table3_parameters, tables_by_init
from .writer import Report, build_report, display_output, display_outputs, regenerate, write_report

__all__ = [
    "MEAN_ROW", "RESULT_FILES", "StudyResults", "Comparison", "Report", "load_results", "condition_label", "select",
    "plan_comparisons", "paired_comparison", "run_comparisons", "condition_summary", "pelvic_table1",
    "recommendations", "table3_parameters", "tables_by_init", "build_report", "write_report", "regenerate", "display_output",
    "display_outputs", "results_overview",
]
