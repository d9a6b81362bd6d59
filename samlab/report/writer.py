"""Writing the report: :func:`build_report` (in memory), :func:`write_report`, :func:`regenerate`.

Outputs go to ``<out_dir>/<profile>/<name>.{png,pdf,csv}`` and, prefixed ``07_``, to the
run directory's ``figures/``. A ``manifest.json`` lists what was written, so a rerun removes
its own stale outputs (a figure whose results disappeared) and nothing else.
"""
from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..io import InputFileError, atomic_path, read_json, write_json_atomic, write_text_atomic
from .comparisons import plan_comparisons, run_comparisons
from .conditions import StudyResults, load_results
from .figures import report_figures
from .tables import condition_summary, pelvic_table1, recommendations, table3_parameters, tables_by_init

# =========================================================================== report


@dataclass
class Report:
    """Everything :func:`regenerate` writes, in memory: tables, figures, notes for the reader."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _statistics(frame: pd.DataFrame, params: Any, report: Report, say: Any) -> tuple:
    """Comparisons, per-condition summary and recommendations (the numbers every figure draws from)."""
    kwargs = dict(confidence=params.confidence, n_resamples=params.n_resamples, seed=params.seed)
    plan, notes = plan_comparisons(frame)
    report.notes += notes
    comparisons, notes = run_comparisons(frame, plan, metrics=params.metrics, test=params.test,
                                         correction=params.correction, alpha=params.alpha,
                                         unmatched=params.unmatched, min_n=params.min_n, **kwargs)
    report.notes += notes
    ran = comparisons["comparison"].nunique() if len(comparisons) else 0
    say(f"[figures] {len(plan)} comparison(s) planned, {ran} run")
    summary = condition_summary(frame, params.metrics, **kwargs)
    rank_metric = "dice" if "dice" in set(frame["metric"]) else str(frame["metric"].iloc[0])
    table4, notes = recommendations(frame, rank_metric, alpha=params.alpha, min_n=params.min_n, **kwargs)
    report.notes += notes
    return comparisons, summary, table4, plan


def build_report(run_dir: str | os.PathLike, params: Any | None = None, verbose: bool = True,
                 table3_cache: str | os.PathLike | None = None) -> Report:
    """Compute every table and figure of a run (nothing is written but ``table3_cache``; see
    :func:`write_report`)."""
    from ..config import StatisticsParams
    from ..paths import resolve_run_dir
    from ..viz import set_style

    params = params or StatisticsParams()
    root = resolve_run_dir(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {root} does not exist (run a profile first, e.g. `samlab run params/quick.yaml`)")
    say = print if verbose else (lambda *a, **k: None)
    report = Report()
    study = load_results(root / "results")
    report.notes += study.notes
    report.missing = study.missing
    frame = study.frame
    say(f"[figures] {len(frame)} result rows from {list(study.present) or 'no files'} in {root / 'results'}")
    set_style()

    with warnings.catch_warnings():  # the report holds its figures until written: many are open at once
        warnings.filterwarnings("ignore", message="More than 20 figures have been opened")
        _build_into(report, study, params, say, table3_cache)
    return report


def _build_into(report: Report, study: StudyResults, params: Any, say: Any, table3_cache: Any = None) -> None:
    from ..viz import plot_parameter_counts

    frame = study.frame
    if len(frame):
        comparisons, summary, table4, plan = _statistics(frame, params, report, say)
        plan_by_name = {c.name: c for c in plan}
        report.tables["comparisons"] = comparisons
        report.tables["summary"] = summary
        if study.has("zero_shot") or study.has("nnunet") or study.has("finetune"):
            long, wide = pelvic_table1(frame)
            report.tables["pelvic_table1"] = wide
            report.tables["pelvic_table1_long"] = long
        rank_metric = "dice" if "dice" in set(frame["metric"]) else str(frame["metric"].iloc[0])
        if len(table4):
            report.tables["finetune_table4_recommendations"] = table4
        by_init = tables_by_init(summary)
        if len(by_init):
            report.tables["finetune_tables9_11_by_init"] = by_init
        figures = report_figures(frame, comparisons, summary, plan_by_name, rank_metric, params)
        for name, fig in figures.items():
            if fig is not None:
                report.figures[name] = fig
        absent = [n for n, f in figures.items() if f is None]
        if absent:
            report.notes.append(f"figures not drawn (their results or comparisons are absent): {', '.join(absent)}")
    else:
        report.notes.append("no results rows at all: only the parameter table (Table 3) is built")

    if params.parameter_table:
        start = time.perf_counter()
        table3 = table3_parameters(table3_cache)
        report.tables["finetune_table3_parameters"] = table3
        report.figures["finetune_table3_parameters"] = plot_parameter_counts(
            table3, title="Trainable parameters, ours vs the paper's Table 3")
        say(f"[figures] Table 3 parameter counts: {time.perf_counter() - start:.1f} s")


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _copy_atomic(source: Path, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(source.read_bytes())
    return target


def _prune(folder: Path, manifest_name: str, keep: Sequence[Path]) -> None:
    """Delete the files a previous run listed in ``manifest_name`` that this run did not write."""
    manifest = folder / manifest_name
    keep_names = {p.name for p in keep}
    if manifest.is_file():
        try:
            previous = read_json(manifest, "report manifest").get("files", [])
        except (InputFileError, AttributeError):
            previous = []  # an unreadable manifest: prune nothing
        for name in previous:
            stale = folder / Path(name).name  # names only: never leave the folder
            if Path(name).name not in keep_names and stale.is_file():
                stale.unlink()
    write_json_atomic(manifest, {"files": sorted(keep_names)})


def write_report(report: Report, out_dir: str | os.PathLike, run_figures: str | os.PathLike | None = None,
                 formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write tables (CSV), figures (PNG + PDF) and ``notes.txt`` to ``out_dir``; copy them, prefixed
    ``07_``, to ``run_figures``. Returns every path written (manifests excluded)."""
    import matplotlib.pyplot as plt

    from ..viz import save_figure_atomic

    out = Path(out_dir)
    written: list[Path] = []
    for name, table in report.tables.items():
        written.append(_write_csv_atomic(table, out / f"{name}.csv"))
    for name, fig in report.figures.items():
        written += save_figure_atomic(fig, out / name, formats=formats)
        plt.close(fig)
    notes = "\n".join(f"- {n}" for n in report.notes) or "- nothing to report"
    written.append(write_text_atomic(out / "notes.txt", f"Notes from samlab.report.regenerate\n\n{notes}\n"))
    _prune(out, "manifest.json", written)
    if run_figures is not None:
        run_figures = Path(run_figures)
        copies = [_copy_atomic(p, run_figures / f"07_{p.name}") for p in written]
        _prune(run_figures, "07_manifest.json", copies)
        written += copies
    return written


def _profile_name(root: Path) -> str:
    record = root / "run.json"
    if record.is_file():
        try:
            name = read_json(record, "run record").get("profile")
        except (InputFileError, AttributeError):
            name = None
        if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            return name
    return root.name


def regenerate(run_dir: str | os.PathLike, out_dir: str | os.PathLike = "figures", profile_name: str | None = None,
               params: Any | None = None, verbose: bool = True) -> list[Path]:
    """Rebuild every table and figure of ``run_dir`` from its results; no training, no inference.

    Writes ``<out_dir>/<profile_name>/<name>.{png,pdf,csv}`` (relative ``out_dir``: from the
    project root) and copies to ``<run_dir>/figures/07_<name>.*``. ``profile_name`` defaults
    to the profile recorded in ``<run_dir>/run.json``, else the run folder's name. ``params``
    is a :class:`samlab.config.StatisticsParams` (test, correction, alpha, bootstrap, …).
    Returns the paths written. Absent results files are reported, not fatal.
    """
    from ..config import StatisticsParams
    from ..paths import resolve_run_dir
    from ..workspace import RunDir

    start = time.perf_counter()
    params = params or StatisticsParams()
    root = resolve_run_dir(run_dir)
    profile = profile_name or _profile_name(root)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", profile):
        raise ValueError(f"profile_name {profile!r} must be letters, digits, '_', '.', '-' (it names a folder)")
    target = resolve_run_dir(out_dir) / profile
    report = build_report(root, params, verbose=verbose, table3_cache=target / ".table3_cache.json")
    written = write_report(report, target, RunDir(root).figures)
    if verbose:
        for note in report.notes:
            print(f"[figures] NOTE: {note}")
        print(f"[figures] wrote {len(written)} file(s) to {target} and {root / 'figures'} "
              f"in {time.perf_counter() - start:.1f} s")
    return written


def display_output(written: Sequence[Path], name: str, max_rows: int = 60) -> None:
    """Show one regenerated output in a notebook (PNG or CSV by name); say so when it was not produced."""
    from IPython.display import Image, display

    png = [p for p in written if p.name == f"{name}.png"]
    csv = [p for p in written if p.name == f"{name}.csv"]
    if png:
        display(Image(filename=str(png[0])))
    elif csv:
        with pd.option_context("display.max_rows", max_rows, "display.max_columns", 40, "display.width", 200):
            display(pd.read_csv(csv[0], keep_default_na=False, na_values=[""]))
    else:
        print(f"({name}: not produced for this run — see the notes above for the missing results)")


def display_outputs(written: Sequence[Path], names: Sequence[str] = (), prefix: str = "") -> None:
    """Show several outputs in a notebook: each of ``names``, then every PNG whose name starts with ``prefix``."""
    stems = list(names)
    if prefix:
        stems += sorted({p.stem for p in written if p.name.startswith(prefix) and p.suffix == ".png"})
    for name in dict.fromkeys(stems):
        display_output(written, name)
