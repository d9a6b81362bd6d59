"""Download registry for the public data sets of the study, with resume and checksums.

Why a registry: the notebooks must say exactly which public file they used, fetch
it unattended when a network exists, and tell the user precisely where to put
it by hand when none does. Each entry names its URL and, where known, its size
and digest.

Honesty about checksums: a digest is stored only when it comes from a named
published source (the MSD MD5 sums are MONAI's ``DecathlonDataset.md5`` table).
Where no digest is published, the registry stores ``None``; the first
successful download then records the file's SHA-256 next to it
(``<file>.sha256``, ``sha256sum`` format) and every later use verifies against
that record (trust on first use). Nothing here invents a hash.

Downloads are resumable: bytes go to ``<file>.part`` and a later call asks the
server for the rest with an HTTP ``Range`` header (``urllib`` only, no extra
dependency). The final name appears only after verification succeeds.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from samlab.io import write_text_atomic

__all__ = [
    "RemoteFile",
    "DatasetEntry",
    "REGISTRY",
    "DownloadError",
    "ChecksumError",
    "OfflineError",
    "file_digest",
    "verify_file",
    "offline_message",
    "download_file",
    "extract_archive",
    "fetch_dataset",
    "locate_dataset",
]

_CHUNK = 1 << 20
_USER_AGENT = "samlab-data-downloader (+https://github.com/)"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file. Unknown size/digests are ``None`` (see module docstring)."""

    filename: str
    url: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False
    checksum_source: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    """A public data set: where it comes from and what the user gets after extraction."""

    key: str
    title: str
    homepage: str
    citation: str
    licence: str
    files: tuple[RemoteFile, ...]
    data_dir: str  # folder (relative to the entry's folder) holding the data after extraction
    layout: str  # what lies in data_dir, for the reader
    label_map: dict[str, int] = field(default_factory=dict)
    notes: str = ""


REGISTRY: dict[str, DatasetEntry] = {
    "pelvic_mr_li2022": DatasetEntry(
        key="pelvic_mr_li2022",
        title="Male pelvic T2w MR, 589 images, 8 structures (Li et al. 2022), Zenodo record 7013610",
        homepage="https://zenodo.org/record/7013610",
        citation=(
            "Li Y, Fu Y, Gayo I, et al. Prototypical few-shot segmentation for cross-institution male pelvic "
            "structures with spatial registration. Medical Image Analysis 2023 (arXiv:2209.05160). "
            "Data set used by the zero-shot MedSAM pelvic MRI study."
        ),
        licence="see the Zenodo record",
        files=(
            RemoteFile("data.zip", "https://zenodo.org/record/7013610/files/data.zip", extract=True),
            RemoteFile("institution.txt", "https://zenodo.org/record/7013610/files/institution.txt"),
        ),
        data_dir="data",
        layout="data/<uid>_img.nii + data/<uid>_mask.nii pairs; institution.txt maps uid -> source study. "
        "Convert with samlab.data.curate.convert_paired_to_nnunet_raw before curation.",
        # Label order as documented by the ImgX-DiffSeg male_pelvic_mr builder (BladderMask, BoneMask,
        # ObdInternMask, TZ, CG, RectumMask, SV, NVB = 1..8); check against the record before publishing.
        label_map={
            "background": 0,
            "bladder": 1,
            "bone": 2,
            "obturator_internus": 3,
            "transition_zone": 4,
            "central_gland": 5,
            "rectum": 6,
            "seminal_vesicle": 7,
            "neurovascular_bundle": 8,
        },
        notes="No size or digest is published with the files here: the first download records its SHA-256.",
    ),
    "msd_prostate": DatasetEntry(
        key="msd_prostate",
        title="Medical Segmentation Decathlon Task05_Prostate (32 training cases, T2 + ADC)",
        homepage="http://medicaldecathlon.com/",
        citation="Antonelli M, et al. The Medical Segmentation Decathlon. Nat Commun 13, 4128 (2022); "
        "Simpson AL, et al. arXiv:1902.09063 (2019).",
        licence="CC-BY-SA 4.0",
        files=(
            RemoteFile(
                "Task05_Prostate.tar",
                "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task05_Prostate.tar",
                md5="35138f08b1efaef89d7424d2bcc928db",
                extract=True,
                checksum_source="MONAI monai.apps.DecathlonDataset.md5['Task05_Prostate']",
            ),
        ),
        data_dir="Task05_Prostate",
        layout="MSD layout: dataset.json with a 'training' list; imagesTr/prostate_XX.nii.gz are 4D (T2, ADC); "
        "read with samlab.data.readers.read_raw_dataset (channel 0 = T2).",
        label_map={"background": 0, "PZ": 1, "TZ": 2},
    ),
    "msd_hippocampus": DatasetEntry(
        key="msd_hippocampus",
        title="Medical Segmentation Decathlon Task04_Hippocampus (260 training cases)",
        homepage="http://medicaldecathlon.com/",
        citation="Antonelli M, et al. The Medical Segmentation Decathlon. Nat Commun 13, 4128 (2022).",
        licence="CC-BY-SA 4.0",
        files=(
            RemoteFile(
                "Task04_Hippocampus.tar",
                "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task04_Hippocampus.tar",
                md5="9d24dba78a72977dbd1d2e110310f31b",
                extract=True,
                checksum_source="MONAI monai.apps.DecathlonDataset.md5['Task04_Hippocampus']",
            ),
        ),
        data_dir="Task04_Hippocampus",
        layout="MSD layout: dataset.json with a 'training' list; imagesTr/hippocampus_XXX.nii.gz.",
        label_map={"background": 0, "Anterior": 1, "Posterior": 2},
    ),
}


class DownloadError(RuntimeError):
    """A download could not be completed."""


class ChecksumError(DownloadError):
    """A downloaded (or hand-placed) file does not match its expected size or digest."""


class OfflineError(DownloadError):
    """The server could not be reached; the message says where to put the file by hand."""


# --------------------------------------------------------------------------- checksums


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = _CHUNK) -> str:
    """Hex digest of a file, read in chunks (multi-GB archives never sit in memory)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_sha256(path: Path) -> str | None:
    side = _sidecar(path)
    if not side.is_file():
        return None
    text = side.read_text().split()
    return text[0].lower() if text else None


def _record_sha256(path: Path, digest: str) -> None:
    write_text_atomic(_sidecar(path), f"{digest}  {path.name}\n")


def verify_file(path: str | os.PathLike, remote: RemoteFile) -> str:
    """Check size and every known digest of ``path``; return its SHA-256.

    Expected values come from the registry, else from the SHA-256 recorded at the
    first download. Raises :class:`ChecksumError` naming the file, the expected
    and the actual value.
    """
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"{path}: file not found")
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ChecksumError(f"{path}: size {size} bytes, expected {remote.size} bytes ({remote.url})")
    sha = file_digest(path, "sha256")
    expected_sha = (remote.sha256 or _recorded_sha256(path) or "").lower() or None
    if expected_sha is not None and sha != expected_sha:
        origin = "registry" if remote.sha256 else f"recorded in {_sidecar(path).name} at first download"
        raise ChecksumError(f"{path}: SHA-256 {sha} does not match the expected {expected_sha} ({origin})")
    if remote.md5 is not None:
        md5 = file_digest(path, "md5")
        if md5 != remote.md5.lower():
            raise ChecksumError(
                f"{path}: MD5 {md5} does not match the expected {remote.md5} ({remote.checksum_source or 'registry'})"
            )
    return sha


# --------------------------------------------------------------------------- messages


def _expected_text(remote: RemoteFile) -> str:
    parts = [f"size {remote.size} bytes" if remote.size is not None else "size unknown"]
    if remote.sha256:
        parts.append(f"SHA-256 {remote.sha256}")
    if remote.md5:
        parts.append(f"MD5 {remote.md5}")
    if not remote.sha256 and not remote.md5:
        parts.append("no published checksum (the SHA-256 is recorded at first use)")
    return ", ".join(parts)


def offline_message(key: str, dest_root: str | os.PathLike, reason: str = "") -> str:
    """Step-by-step instructions to install a registry entry by hand."""
    entry = _entry(key)
    folder = Path(dest_root) / entry.key
    env = _env_var(key)
    lines = [f"Could not download {entry.title}" + (f" ({reason})." if reason else "."), "To install it by hand:"]
    lines.append("  1. On a machine with internet access, download:")
    for rf in entry.files:
        lines.append(f"       {rf.url}")
        lines.append(f"         ({_expected_text(rf)})")
    lines.append("  2. Put the file(s) exactly here:")
    for rf in entry.files:
        lines.append(f"       {folder / rf.filename}")
    lines.append(
        "     (a partial download, if any, is kept as <file>.part and resumes on the next call)"
    )
    lines.append(
        f"  3. Re-run fetch_dataset({entry.key!r}, {str(dest_root)!r}); it verifies the file(s) and extracts "
        f"them to {folder / entry.data_dir}."
    )
    lines.append(
        f"Or, if the extracted data already lies elsewhere, pass local_path=... or set {env}=/path/to/{entry.data_dir}."
    )
    lines.append(f"Homepage: {entry.homepage}")
    return "\n".join(lines)


def _entry(key: str) -> DatasetEntry:
    if key not in REGISTRY:
        raise KeyError(f"unknown data set {key!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[key]


def _env_var(key: str) -> str:
    return "SAMLAB_DATA_" + "".join(c if c.isalnum() else "_" for c in key).upper()


# --------------------------------------------------------------------------- download


def _content_length(resp: Any) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _status(resp: Any) -> int | None:
    status = getattr(resp, "status", None)
    if status is None and hasattr(resp, "getcode"):
        status = resp.getcode()
    return status


def download_file(
    remote: RemoteFile,
    dest_dir: str | os.PathLike,
    *,
    opener: Callable[..., Any] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = _CHUNK,
    dataset_key: str | None = None,
) -> Path:
    """Fetch one file into ``dest_dir`` (resuming a ``.part``), verify it, return its path.

    An existing final file is only verified. ``opener`` defaults to
    :func:`urllib.request.urlopen` (``file://`` URLs work too); tests pass a fake.
    A server that ignores ``Range`` (status 200) restarts the download from byte 0.
    """
    from tqdm.auto import tqdm

    opener = opener or urllib.request.urlopen
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.filename
    part = final.with_name(final.name + ".part")
    if final.exists():
        sha = verify_file(final, remote)
        if _recorded_sha256(final) is None:
            _record_sha256(final, sha)
        return final

    def offline(reason: str) -> OfflineError:
        if dataset_key is not None:
            return OfflineError(offline_message(dataset_key, dest_dir.parent, reason))
        return OfflineError(
            f"Could not download {remote.url} ({reason}). Download it by hand and put it at {final} "
            f"({_expected_text(remote)}); a partial download is kept at {part}."
        )

    start = part.stat().st_size if part.exists() else 0
    if remote.size is not None and start > remote.size:
        part.unlink()
        start = 0
    if not (remote.size is not None and start == remote.size):
        headers = {"User-Agent": _USER_AGENT}
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(remote.url, headers=headers)
        try:
            resp = opener(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and start:  # nothing left to send: the .part is complete
                resp = None
            else:
                raise DownloadError(f"{remote.url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as err:
            raise offline(str(getattr(err, "reason", err))) from err
        if resp is not None:
            with resp:
                status = _status(resp)
                content_range = getattr(resp, "headers", {}).get("Content-Range", "") if start else ""
                resumed = start > 0 and status == 206 and (not content_range or content_range.startswith(f"bytes {start}-"))
                if not resumed:
                    start = 0
                length = _content_length(resp)
                total = (start + length) if length is not None else remote.size
                mode = "ab" if resumed else "wb"
                try:
                    with open(part, mode) as fh, tqdm(
                        total=total, initial=start, unit="B", unit_scale=True, desc=remote.filename,
                        disable=not progress, leave=False,
                    ) as bar:
                        while True:
                            block = resp.read(chunk_size)
                            if not block:
                                break
                            fh.write(block)
                            bar.update(len(block))
                except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as err:
                    raise offline(f"connection lost after {part.stat().st_size} bytes: {err}") from err
    # ``part`` is not a temporary file for atomic_path: it outlives a failed run so the next one can
    # resume the download with an HTTP Range request; it is renamed only once verified.
    try:
        sha = verify_file(part, remote)
    except ChecksumError as err:
        bad = final.with_name(final.name + ".bad")
        os.replace(part, bad)
        raise ChecksumError(f"{err}; the download was moved to {bad} and will not be resumed") from err
    os.replace(part, final)
    _record_sha256(final, sha)
    return final


# --------------------------------------------------------------------------- extraction


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract a .zip/.tar(.gz) into ``dest_dir`` safely; members escaping it are refused.

    Extraction goes to a temporary folder inside ``dest_dir`` and is moved into
    place member by member only when complete, so an interrupted extraction never
    leaves a half-filled data folder that looks finished.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract_", dir=dest_dir))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                root = tmp.resolve()
                for name in zf.namelist():
                    target = (tmp / name).resolve()
                    if root not in target.parents and target != root:
                        raise DownloadError(f"{archive}: member {name!r} would be written outside {dest_dir}")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(tmp, filter="data")
                except tarfile.FilterError as err:
                    raise DownloadError(f"{archive}: unsafe member refused: {err}") from err
        else:
            raise DownloadError(f"{archive}: not a zip or tar archive")
        # Whole extracted folders are moved, which atomic_path (single files) cannot do.
        for item in tmp.iterdir():
            target = dest_dir / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir


def fetch_dataset(
    key: str,
    dest_root: str | os.PathLike,
    *,
    local_path: str | os.PathLike | None = None,
    extract: bool = True,
    opener: Callable[..., Any] | None = None,
    progress: bool = True,
) -> Path:
    """Make a registered data set available and return its data folder.

    Order: an explicit ``local_path`` or the ``SAMLAB_DATA_<KEY>`` environment
    variable (used as is); an already extracted copy under ``dest_root/<key>``;
    otherwise download (resuming), verify and extract. Offline, raises
    :class:`OfflineError` whose message says exactly where to put the files.
    """
    entry = _entry(key)
    found = locate_dataset(key, local_path=local_path, dest_root=dest_root)
    if found is not None:
        return found
    folder = Path(dest_root) / entry.key
    for rf in entry.files:
        path = download_file(rf, folder, opener=opener, progress=progress, dataset_key=key)
        if rf.extract and extract:
            extract_archive(path, folder)
    data = folder / entry.data_dir
    if extract and not data.exists():
        raise DownloadError(f"{data}: expected after extracting {[rf.filename for rf in entry.files]}, not found")
    write_text_atomic(folder / ".samlab_complete", entry.data_dir + "\n")
    return data


def locate_dataset(
    key: str, *, local_path: str | os.PathLike | None = None, dest_root: str | os.PathLike | None = None
) -> Path | None:
    """The data folder of a registered set if it is already on disk, else ``None``.

    A ``local_path`` (or ``SAMLAB_DATA_<KEY>``) that does not exist is an error:
    silently downloading instead would hide a typo.
    """
    entry = _entry(key)
    override = local_path if local_path is not None else os.environ.get(_env_var(key))
    if override:
        path = Path(override)
        if not path.exists():
            source = "local_path" if local_path is not None else _env_var(key)
            raise FileNotFoundError(f"{path}: given as {source} for {key!r} but does not exist")
        return path
    if dest_root is not None:
        folder = Path(dest_root) / entry.key
        if (folder / ".samlab_complete").is_file() and (folder / entry.data_dir).exists():
            return folder / entry.data_dir
    return None
