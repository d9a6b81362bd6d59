"""The ``samlab`` command: ``samlab run PROFILE``, ``samlab validate PROFILE``, ``samlab models``."""
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
    models = sub.add_parser("models", help="list registered models")
    models.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
