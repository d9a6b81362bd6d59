"""Patient-level splits, few-shot sampling and the leakage check.

Why patient level, never slice level: neighbouring slices of one patient are
nearly identical, so a slice-level split puts the test patient into training and
inflates every score. Both studies split patients: the pelvic study 80:20
train/test, then the training part 80:20 train/val; the 18-config study 7:1:2
train/val/test. Few-shot training (5/10/20 images) draws its slices from
distinct volumes, from the training and validation patients respectively.

All randomness comes from ``numpy.random.default_rng(seed)`` applied to a sorted
list of ids, so a split depends only on the set of patients and the seed -- not
on file-system order.
"""
from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

import numpy as np

from samlab.io import read_json, write_json_atomic

__all__ = [
    "SPLIT_NAMES",
    "SCHEMES",
    "LeakageError",
    "split_counts",
    "split_patients",
    "assign_items",
    "find_leaks",
    "assert_no_leakage",
    "sample_k_shot",
    "k_shot_splits",
    "write_splits_json",
    "read_splits_json",
    "validate_splits",
    "subject_from_pattern",
    "read_subject_csv",
    "subject_rule",
]

T = TypeVar("T")

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")

#: Named split schemes. ``pelvic``: test fraction of all patients, then val
#: fraction of the remaining (nested, the zero-shot study); ``finetune_sam``:
#: train/val/test fractions of all patients (7:1:2, the 18-config study).
SCHEMES: dict[str, dict[str, object]] = {
    "pelvic": {"nested": True, "test": 0.2, "val": 0.2},
    "finetune_sam": {"nested": False, "train": 0.7, "val": 0.1, "test": 0.2},
}


class LeakageError(ValueError):
    """A patient appears in more than one split; ``leaks`` maps patient -> splits."""

    def __init__(self, leaks: Mapping[str, Sequence[str]], detail: str = "") -> None:
        self.leaks = {k: tuple(v) for k, v in leaks.items()}
        listing = "; ".join(f"{p} in {', '.join(s)}" for p, s in sorted(self.leaks.items()))
        super().__init__(f"patient-level leakage: {len(self.leaks)} patient(s) in more than one split: {listing}{detail}")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_counts(n: int, scheme: str | Mapping[str, float] = "pelvic") -> dict[str, int]:
    """How many patients go to train/val/test for ``n`` patients under ``scheme``.

    Fractions are rounded half up; when there are at least 3 patients every split
    with a non-zero fraction gets at least one (a split with no patient would
    silently skip validation or testing). 589 patients under ``pelvic`` give
    test 118, val 94, train 377.
    """
    if n < 0:
        raise ValueError(f"number of patients must be >= 0, got {n}")
    spec = _scheme(scheme)
    if spec["nested"]:
        n_test = _round_half_up(n * float(spec["test"]))
        n_val = _round_half_up((n - n_test) * float(spec["val"]))
        fracs = {"val": float(spec["val"]), "test": float(spec["test"])}
    else:
        total = sum(float(spec[k]) for k in SPLIT_NAMES)
        fracs = {k: float(spec[k]) / total for k in ("val", "test")}
        n_test = _round_half_up(n * fracs["test"])
        n_val = _round_half_up(n * fracs["val"])
    if n >= 3:
        n_test = max(n_test, 1) if fracs["test"] > 0 else 0
        n_val = max(n_val, 1) if fracs["val"] > 0 else 0
    n_test = min(n_test, n)
    n_val = min(n_val, n - n_test)
    return {"train": n - n_test - n_val, "val": n_val, "test": n_test}


def _scheme(scheme: str | Mapping[str, float]) -> dict[str, object]:
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown split scheme {scheme!r}; choose one of {sorted(SCHEMES)} or pass fractions")
        return dict(SCHEMES[scheme])
    spec = {k: float(scheme.get(k, 0.0)) for k in SPLIT_NAMES}
    unknown = set(scheme) - set(SPLIT_NAMES)
    if unknown or any(v < 0 for v in spec.values()) or sum(spec.values()) <= 0:
        raise ValueError(f"split fractions must be non-negative train/val/test values, got {dict(scheme)}")
    return {"nested": False, **spec}


def split_patients(
    patients: Iterable[str],
    scheme: str | Mapping[str, float] = "pelvic",
    seed: int = 0,
    *,
    strata: Mapping[str, Hashable] | None = None,
) -> dict[str, list[str]]:
    """Split patient ids into ``{"train", "val", "test"}`` lists (sorted), seeded.

    ``strata`` (patient -> group, e.g. the source study) splits each group on its
    own so that every group keeps the scheme's proportions -- useful for the
    pelvic set, where seven studies contribute equally.
    """
    ids = sorted(set(patients))
    if not ids:
        raise ValueError("no patients to split")
    rng = np.random.default_rng(seed)
    groups: dict[Hashable, list[str]] = defaultdict(list)
    if strata is None:
        groups[0] = ids
    else:
        missing = [p for p in ids if p not in strata]
        if missing:
            raise ValueError(f"strata has no group for patient(s) {missing[:10]}")
        for p in ids:
            groups[strata[p]].append(p)
    out: dict[str, list[str]] = {k: [] for k in SPLIT_NAMES}
    for key in sorted(groups, key=str):
        members = groups[key]
        order = [members[i] for i in rng.permutation(len(members))]
        counts = split_counts(len(order), scheme)
        out["test"] += order[: counts["test"]]
        out["val"] += order[counts["test"] : counts["test"] + counts["val"]]
        out["train"] += order[counts["test"] + counts["val"] :]
    return {k: sorted(v) for k, v in out.items()}


def _patient_fn(patient_of: Callable[[T], str] | Mapping[T, str]) -> Callable[[T], str]:
    if callable(patient_of):
        return patient_of

    def lookup(item: T) -> str:
        try:
            return patient_of[item]
        except KeyError:
            raise KeyError(f"no patient known for item {item!r}") from None

    return lookup


def assign_items(
    items: Iterable[T], patient_of: Callable[[T], str] | Mapping[T, str], patient_splits: Mapping[str, Iterable[str]]
) -> dict[str, list[T]]:
    """Distribute items (slices, cases) to the split of their patient.

    Raises if a patient is in no split or in several (so a slice can never end up
    on the wrong side).
    """
    get = _patient_fn(patient_of)
    where: dict[str, str] = {}
    for split, pats in patient_splits.items():
        for p in pats:
            if p in where and where[p] != split:
                raise LeakageError({p: (where[p], split)})
            where[p] = split
    out: dict[str, list[T]] = {k: [] for k in patient_splits}
    for item in items:
        p = get(item)
        if p not in where:
            raise KeyError(f"patient {p!r} of item {item!r} is in no split")
        out[where[p]].append(item)
    return out


def find_leaks(
    splits: Mapping[str, Iterable[T]], patient_of: Callable[[T], str] | Mapping[T, str]
) -> dict[str, list[str]]:
    """Patients found in more than one split, with the splits they are in."""
    get = _patient_fn(patient_of)
    seen: dict[str, list[str]] = defaultdict(list)
    for split, items in splits.items():
        for p in {get(it) for it in items}:
            seen[p].append(split)
    return {p: sorted(s) for p, s in sorted(seen.items()) if len(s) > 1}


def assert_no_leakage(
    splits: Mapping[str, Iterable[T]], patient_of: Callable[[T], str] | Mapping[T, str]
) -> None:
    """Raise :class:`LeakageError` naming every patient whose items fall in two or more splits.

    ``splits`` maps split name -> items (case ids, slice ids, paths…);
    ``patient_of`` maps an item to its patient (a function or a dict).
    """
    materialised = {k: list(v) for k, v in splits.items()}
    leaks = find_leaks(materialised, patient_of)
    if leaks:
        get = _patient_fn(patient_of)
        examples = []
        for p in list(leaks)[:5]:
            per_split = {s: [str(it) for it in materialised[s] if get(it) == p][:3] for s in leaks[p]}
            examples.append(f"{p}: {per_split}")
        raise LeakageError(leaks, " (items: " + "; ".join(examples) + ")")


def sample_k_shot(
    items: Sequence[T],
    k: int,
    seed: int = 0,
    *,
    volume_of: Callable[[T], str] | Mapping[T, str],
    key: Callable[[T], str] = str,
) -> list[T]:
    """Draw ``k`` items from ``k`` distinct volumes (one item per volume), seeded.

    Why distinct volumes: the 18-config study picks few-shot images from
    different volumes "to ensure diversity"; five slices of one patient would be
    almost one image. ``key`` gives a sortable id for order-independent sampling.
    Pass only usable items (e.g. non-empty slices) -- the sampler does not look
    inside them.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    get = _patient_fn(volume_of)
    by_volume: dict[str, list[T]] = defaultdict(list)
    for it in sorted(items, key=key):
        by_volume[get(it)].append(it)
    volumes = sorted(by_volume)
    if len(volumes) < k:
        raise ValueError(f"{k}-shot sampling needs {k} distinct volumes, only {len(volumes)} available: {volumes}")
    rng = np.random.default_rng(seed)
    chosen = [volumes[i] for i in rng.permutation(len(volumes))[:k]]
    return [by_volume[v][int(rng.integers(len(by_volume[v])))] for v in chosen]


def k_shot_splits(
    train_items: Sequence[T],
    val_items: Sequence[T],
    k: int,
    seed: int = 0,
    *,
    volume_of: Callable[[T], str] | Mapping[T, str],
    patient_of: Callable[[T], str] | Mapping[T, str] | None = None,
    k_val: int | None = None,
    key: Callable[[T], str] = str,
) -> dict[str, list[T]]:
    """``k`` training and ``k_val`` (default ``k``) validation items, each from distinct volumes, seeded.

    The 18-config study draws its 5 training and 5 validation images this way;
    for 10/20-shot runs a validation pool may hold fewer volumes, hence ``k_val``.
    The pools must already be patient-disjoint (from :func:`split_patients`);
    the result is checked with :func:`assert_no_leakage` (by ``patient_of``,
    default ``volume_of``), so a leaky pool is reported, not sampled from.
    """
    out = {
        "train": sample_k_shot(train_items, k, seed, volume_of=volume_of, key=key),
        "val": sample_k_shot(val_items, k if k_val is None else k_val, seed + 1, volume_of=volume_of, key=key),
    }
    assert_no_leakage(out, patient_of if patient_of is not None else volume_of)
    return out


def write_splits_json(splits: Mapping[str, Iterable[str]], path: str | os.PathLike) -> Path:
    """Write ``{"train": [...], "val": [...], "test": [...]}`` atomically (temp file + rename).

    This file is the contract the other notebooks read; missing splits are
    written as empty lists so readers can rely on the three keys.
    """
    path = Path(path)
    unknown = set(splits) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"unknown split name(s) {sorted(unknown)}; expected {SPLIT_NAMES}")
    payload = {k: [str(x) for x in splits.get(k, [])] for k in SPLIT_NAMES}
    return write_json_atomic(path, payload)


def validate_splits(splits: Any, source: str = "splits") -> dict[str, list[str]]:
    """Check a split mapping and return it as ``{"train": [...], "val": [...], "test": [...]}`` lists of ids.

    The one definition of a valid split, for a ``splits.json`` and for a mapping a
    caller passes in alike: exactly the three keys (an unknown key such as a
    misspelt ``"valid"`` would otherwise silently drop its cases), each a list of
    non-empty case-id strings, no case listed twice in one split or in two splits.
    Errors name ``source`` (the file, for a file).
    """
    if not isinstance(splits, Mapping):
        raise ValueError(f"{source}: expected a mapping with keys {list(SPLIT_NAMES)}, got {type(splits).__name__}")
    missing = [k for k in SPLIT_NAMES if k not in splits]
    if missing:
        raise ValueError(f"{source} lacks key(s) {missing}; expected {list(SPLIT_NAMES)}")
    unknown = sorted(str(k) for k in splits if k not in SPLIT_NAMES)
    if unknown:
        raise ValueError(f"{source}: unknown split name(s) {unknown}; expected exactly {list(SPLIT_NAMES)}")
    seen: dict[str, str] = {}
    for split in SPLIT_NAMES:
        ids = splits[split]
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) and i for i in ids):
            raise ValueError(f"{source}[{split!r}] must be a list of case-id strings, got {ids!r}")
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            raise ValueError(f"{source}[{split!r}] lists case(s) twice: {twice}")
        for cid in ids:
            if cid in seen:
                raise ValueError(f"{source}: case {cid!r} is in both {seen[cid]!r} and {split!r}")
            seen[cid] = split
    return {k: list(splits[k]) for k in SPLIT_NAMES}


def read_splits_json(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a splits file (see :func:`validate_splits`); a missing or malformed file names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: splits file not found (run notebook 01 / curate first)")
    return validate_splits(read_json(path, "splits file"), source=str(path))


# --------------------------------------------------------------------------- subjects


def subject_from_pattern(pattern: str) -> Callable[[str], str]:
    """A case id -> patient function from a regex with one group (``r"(pat\\d+)_scan\\d+"``).

    Why: several scans of one patient (follow-ups, sequences saved as cases) must land
    in one split; the case id usually carries the patient. A case id the pattern does
    not match is an error naming the case and the pattern, never a silent own patient.
    """
    rx = re.compile(pattern)
    if rx.groups != 1:
        raise ValueError(f"subject_pattern must have exactly one group (the patient), {pattern!r} has {rx.groups}")

    def subject(case_id: str) -> str:
        m = rx.search(case_id)
        if m is None or not m.group(1):
            raise ValueError(f"case {case_id!r} does not match subject_pattern {pattern!r}")
        return m.group(1)

    return subject


def read_subject_csv(path: str | os.PathLike) -> dict[str, str]:
    """``case_id -> subject`` from a CSV with those two header columns; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: subject CSV not found")
    out: dict[str, str] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"case_id", "subject"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: subject CSV needs the header columns case_id, subject (got {reader.fieldnames})")
        for line_no, row in enumerate(reader, start=2):
            case, subj = (row.get("case_id") or "").strip(), (row.get("subject") or "").strip()
            if not case or not subj:
                raise ValueError(f"{path}, line {line_no}: empty case_id or subject")
            if case in out and out[case] != subj:
                raise ValueError(f"{path}, line {line_no}: case {case!r} given two subjects ({out[case]!r}, {subj!r})")
            out[case] = subj
    return out


def subject_rule(subject_pattern: str | None = None, subject_csv: str | os.PathLike | None = None
                 ) -> Callable[[str], str] | dict[str, str] | None:
    """The ``subject_of`` argument of curation from notebook 01's parameters (None: each case its own patient)."""
    if subject_pattern is not None and subject_csv is not None:
        raise ValueError("give subject_pattern or subject_csv, not both")
    if subject_pattern is not None:
        return subject_from_pattern(subject_pattern)
    if subject_csv is not None:
        return read_subject_csv(subject_csv)
    return None
