"""The ``samlab`` command: ``samlab run PROFILE``, ``samlab figures RUN_DIR``, ``samlab sweep GRID``, ``samlab validate PROFILE``, ``samlab models``."""
from __future__ import annotations

import argparse
import sys

from .config import ProfileError, load_profile


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import NotebookFailure, run_profile

    try:
        run_dir = run_profile(args.profile, runs_root=args.runs_root, only=args.only, progress=not args.quiet)
    except ProfileError as exc:
        print(f"samlab: {exc}", file=sys.stderr)
        return 2
    except NotebookFailure as exc:
        print(f"samlab: {exc}", file=sys.stderr)
        return 1
    print(f"[samlab] done: {run_dir}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        profile, steps = load_profile(args.profile)
    except ProfileError as exc:
        print(f"samlab: {exc}", file=sys.stderr)
        return 2
    print(f"profile {profile.name}: OK")
    for name, params in steps:
        print(f"  {name}: {params.model_dump()}")
    return 0


def _cmd_models(_: argparse.Namespace) -> int:
    from .models import MODEL_SPECS

    for spec in MODEL_SPECS.values():
        need = "checkpoint file" if spec.needs_checkpoint else "shipped weights"
        print(f"{spec.name:14s} {spec.image_size:5d}px  {need:16s} {spec.description}")
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from .report import regenerate
    from .runner import resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    if not (run_dir / "results").is_dir():
        print(f"samlab: {run_dir} has no results/ folder: run a profile first (e.g. `samlab run params/quick.yaml`)",
              file=sys.stderr)
        return 2
    from .config import StatisticsParams

    try:
        params = StatisticsParams(min_n=args.min_n, parameter_table=not args.no_parameter_table)
    except ValueError as exc:
        print(f"samlab figures: {exc}", file=sys.stderr)
        return 2
    written = regenerate(run_dir, out_dir=args.out, profile_name=args.profile_name, params=params)
    print(f"[samlab figures] wrote {len(written)} file(s) under {args.out}/")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import describe_sweep, merge_existing, run_sweep

    try:
        if args.dry_run:
            print(describe_sweep(args.grid, runs_root=args.runs_root))
            return 0
        if args.merge_only:
            path, merged = merge_existing(args.grid, runs_root=args.runs_root)
            print(f"[samlab sweep] merged {len(merged)} row(s) -> {path}")
            return 0
        report = run_sweep(args.grid, runs_root=args.runs_root, executor=args.executor, workers=args.workers,
                           attempts=args.attempts, wait=not args.no_wait, only=args.only, progress=not args.quiet)
    except ProfileError as exc:
        print(f"samlab: {exc}", file=sys.stderr)
        return 2
    print(f"[samlab sweep] {len(report.executed)} run, {len(report.skipped)} skipped (done), {len(report.failed)} failed, "
          f"{len(report.submitted)} submitted; {report.rows} result row(s) -> {report.results_path}")
    return 1 if report.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a profile's notebooks into runs/<profile-name>/")
    run.add_argument("profile", help="a YAML profile, e.g. params/quick.yaml")
    run.add_argument("--runs-root", default=None, help="folder that receives <profile-name>/ (default: ./runs)")
    run.add_argument("--only", nargs="+", default=None, help="run only these notebooks of the profile")
    run.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    run.set_defaults(func=_cmd_run)
    validate = sub.add_parser("validate", help="check a profile without running anything")
    validate.add_argument("profile")
    validate.set_defaults(func=_cmd_validate)
    sweep = sub.add_parser("sweep", help="run a grid of profile overrides as resumable jobs (local pool or SLURM)")
    sweep.add_argument("grid", help="a grid file: a base profile + a grid of overrides, e.g. params/sweep-quick.yaml")
    sweep.add_argument("--runs-root", default=None, help="folder that receives <sweep-name>/ (default: ./runs)")
    sweep.add_argument("--executor", choices=["local", "slurm", "submitit-local", "debug"], default=None,
                       help="override the grid file's executor")
    sweep.add_argument("--workers", type=int, default=None, help="local executor: jobs at once (default: cores // 2)")
    sweep.add_argument("--attempts", type=int, default=None, help="runs per job before it counts as failed")
    sweep.add_argument("--only", nargs="+", default=None, help="run only these jobs (names from --dry-run)")
    sweep.add_argument("--dry-run", action="store_true", help="list the jobs and which are done; run nothing")
    sweep.add_argument("--no-wait", action="store_true", help="cluster executors: submit and exit (merge later)")
    sweep.add_argument("--merge-only", action="store_true", help="only re-merge results of the jobs already done")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(func=_cmd_sweep)
    figures = sub.add_parser("figures", help="regenerate every table and figure from a finished run (no training)")
    figures.add_argument("run_dir", help="a run directory, e.g. runs/quick")
    figures.add_argument("--out", default="figures", help="folder that receives <profile-name>/ (default: figures)")
    figures.add_argument("--profile-name", default=None, help="sub-folder name (default: the run's profile)")
    figures.add_argument("--min-n", type=int, default=5,
                         help="fewest pairs a paired test runs on; fewer: reported untested, no stars (default: 5)")
    figures.add_argument("--no-parameter-table", action="store_true",
                         help="skip Table 3 (building the 18 configurations takes ~10 s)")
    figures.set_defaults(func=_cmd_figures)
    models = sub.add_parser("models", help="list registered models")
    models.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
