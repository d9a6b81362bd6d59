"""The ``samlab`` command: ``samlab run PROFILE``, ``samlab figures RUN_DIR``, ``samlab sweep GRID``, ``samlab validate PROFILE``, ``samlab estimate PROFILE``, ``samlab models``."""
from __future__ import annotations

import argparse
import sys
import traceback

from .config import ProfileError


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_profile

    run_dir = run_profile(args.profile, runs_root=args.runs_root, only=args.only, progress=not args.quiet)
    print(f"[samlab] done: {run_dir}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate import check_profile

    checked = check_profile(args.profile, runs_root=args.runs_root, only=args.only)
    print(f"profile {checked.profile.name}: OK (run directory: {checked.run_dir})")
    for line in checked.passed:
        print(f"  checked: {line}")
    for name, params in checked.steps:
        values = params.model_dump()
        values["run_dir"] = str(checked.run_dir)  # what `samlab run` passes, not the schema's default
        print(f"  {name}: {values}")
    return 0


def _cmd_models(_: argparse.Namespace) -> int:
    from .models import MODEL_SPECS

    for spec in MODEL_SPECS.values():
        need = "checkpoint file" if spec.needs_checkpoint else "shipped weights"
        print(f"{spec.name:14s} {spec.image_size:5d}px  {need:16s} {spec.description}")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from .estimate import EstimateRefused, estimate

    try:
        estimate(args.profile, runs_root=args.runs_root)
    except EstimateRefused as exc:
        print(f"samlab estimate: {args.profile}: refused: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from .report import regenerate
    from .paths import resolve_run_dir

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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    debug = argparse.ArgumentParser(add_help=False)  # `samlab run --debug ...` works too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[debug], help="execute a profile's notebooks into runs/<profile-name>/")
    run.add_argument("profile", help="a YAML profile, e.g. params/quick.yaml")
    run.add_argument("--runs-root", default=None, help="folder that receives <profile-name>/ (default: ./runs)")
    run.add_argument("--only", nargs="+", default=None, help="run only these notebooks of the profile")
    run.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    run.set_defaults(func=_cmd_run)
    validate = sub.add_parser("validate", parents=[debug], help="check a profile and every input it names, without heavy work")
    validate.add_argument("profile")
    validate.add_argument("--runs-root", default=None, help="as for `samlab run`: where the run directory would be")
    validate.add_argument("--only", nargs="+", default=None, help="as for `samlab run`: check these names exist")
    validate.set_defaults(func=_cmd_validate)
    sweep = sub.add_parser("sweep", parents=[debug], help="run a grid of profile overrides as resumable jobs (local pool or SLURM)")
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
    figures = sub.add_parser("figures", parents=[debug], help="regenerate every table and figure from a finished run (no training)")
    figures.add_argument("run_dir", help="a run directory, e.g. runs/quick")
    figures.add_argument("--out", default="figures", help="folder that receives <profile-name>/ (default: figures)")
    figures.add_argument("--profile-name", default=None, help="sub-folder name (default: the run's profile)")
    figures.add_argument("--min-n", type=int, default=5,
                         help="fewest pairs a paired test runs on; fewer: reported untested, no stars (default: 5)")
    figures.add_argument("--no-parameter-table", action="store_true",
                         help="skip Table 3 (building the 18 configurations takes ~10 s)")
    figures.set_defaults(func=_cmd_figures)
    estimate = sub.add_parser("estimate", parents=[debug],
                              help="predict a profile's encoder passes, training iterations, minutes and peak memory "
                                   "from a short calibration; refuse what cannot fit in memory")
    estimate.add_argument("profile")
    estimate.add_argument("--runs-root", default=None, help="where earlier runs are (nnU-Net's time is read from them)")
    estimate.set_defaults(func=_cmd_estimate)
    models = sub.add_parser("models", parents=[debug], help="list registered models")
    models.set_defaults(func=_cmd_models)
    return parser


#: What to do, by kind of error, when the message itself does not say.
_ADVICE = {
    PermissionError: "fix the permissions or choose another --runs-root",
    FileNotFoundError: "check the path",
    IsADirectoryError: "give a file, not a folder",
    MemoryError: "use a smaller profile (e.g. params/quick.yaml) or a larger machine",
}


def format_error(exc: BaseException) -> str:
    """``samlab: error: <file>: <problem> -- <what to do>`` on the first line, then any details.

    Why one line first: the useful sentence must be where the eye lands, not after a
    15 KB key list or a traceback (``--debug`` shows the traceback).
    """
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror.lower()}"
    else:
        text = str(exc).strip() or type(exc).__name__
    first, _, details = text.partition("\n")
    advice = next((a for kind, a in _ADVICE.items() if isinstance(exc, kind)), None)
    if advice and " -- " not in first:
        first = f"{first} -- {advice}"
    if type(exc).__module__ == "builtins" and not isinstance(exc, OSError):  # a bare KeyError etc.: say which
        first = f"{type(exc).__name__}: {first}"
    hint = "" if isinstance(exc, ProfileError) else "\n  (samlab --debug ... shows the traceback)"
    return f"samlab: error: {first}" + (f"\n{details}" if details else "") + hint


def _exit_code(exc: BaseException) -> int:
    from .runner import NotebookFailure

    return 1 if isinstance(exc, NotebookFailure) else 2


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; every exception becomes one ``samlab: error:`` line on stderr and a non-zero exit."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("samlab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- the top of the program: report, never a bare traceback
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(format_error(exc), file=sys.stderr)
        return _exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
