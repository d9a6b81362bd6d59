"""One live ``samlab run`` per run directory: a lock file with pid, host and start time.

Why: two runs into one directory both exited 0 and mixed their provenance (run.json
said seed 1, the result rows seed 0). The lock refuses a second live run with a
message naming the holder; a lock left by a dead run (same host, pid gone, e.g.
after ``kill -9``) is taken over, and that run's ``run.json`` -- still saying
``"running"`` -- is marked ``"killed"`` so the record stays true.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .io import write_json_atomic

__all__ = ["LOCK_NAME", "RunDirLockedError", "mark_stale_record", "pid_alive", "run_lock"]

LOCK_NAME = ".samlab-run.lock"


class RunDirLockedError(RuntimeError):
    """Another live ``samlab run`` holds the run directory; the message names it and what to do."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Hold ``run_dir/.samlab-run.lock`` for the block; yield the lock record (pid, host, started, took_over).

    A lock held by a live process -- or by any process on another host, whose liveness
    cannot be probed -- raises :class:`RunDirLockedError`. A lock of a dead process on
    this host is taken over (``took_over`` names it).
    """
    path = Path(run_dir) / LOCK_NAME
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(),
            "took_over": None}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            held = _read_lock(path)
            if held is None:  # unreadable / half-written lock: treat as stale, its writer died mid-write
                path.unlink(missing_ok=True)
                continue
            same_host = held.get("host") == mine["host"]
            if not same_host or pid_alive(int(held.get("pid", -1))):
                where = "on this host" if same_host else f"on host {held.get('host')}"
                raise RunDirLockedError(
                    f"{path}: run directory in use by another samlab run (pid {held.get('pid')} {where}, started "
                    f"{held.get('started')}) -- wait for it to finish, or use another --runs-root; if that run is "
                    "dead, delete the lock file") from None
            mine["took_over"] = held
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({k: v for k, v in mine.items() if k != "took_over"}, handle)
        break
    else:
        raise RunDirLockedError(f"{path}: could not take the run-directory lock -- another run keeps creating it")
    try:
        yield mine
    finally:
        held = _read_lock(path)
        if held and held.get("pid") == mine["pid"] and held.get("host") == mine["host"]:
            path.unlink(missing_ok=True)


def mark_stale_record(record_path: Path, lock: dict[str, Any]) -> dict[str, Any] | None:
    """The previous ``run.json`` (or None); one still saying ``"running"`` is rewritten as ``"killed"``.

    Called while holding the lock: no live run owns that record, so a ``"running"`` status
    means its process died without writing an end (``kill -9``, power loss, a cluster's
    time limit). The rewrite says so and when it was noticed.
    """
    if not record_path.is_file():
        return None
    try:
        previous = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if previous.get("status") == "running":
        dead = lock.get("took_over") or {}
        previous.update(status="killed", killed_note=(
            f"run ended without a final status (process {dead.get('pid', previous.get('host', {}).get('pid', '?'))} "
            f"gone); noticed by pid {lock['pid']} at {datetime.now(timezone.utc).isoformat()}"))
        write_json_atomic(record_path, previous, default=str)
        print(f"[samlab] {record_path}: the previous run was killed before it finished; marked as such", flush=True)
    return previous
