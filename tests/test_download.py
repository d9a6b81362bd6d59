"""Download logic on local files only: file:// URLs and fake openers (no network is touched)."""
from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
from dataclasses import replace

import pytest

from samlab.data import download as dl
from samlab.data.download import (
    REGISTRY,
    ChecksumError,
    DownloadError,
    OfflineError,
    RemoteFile,
    download_file,
    fetch_dataset,
    file_digest,
    locate_dataset,
    offline_message,
    verify_file,
)

PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10244 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Response(io.BytesIO):
    """Enough of an http.client.HTTPResponse for download_file."""

    def __init__(self, data: bytes, status: int, headers: dict[str, str], fail_after: int | None = None):
        super().__init__(data)
        self.status = status
        self.headers = headers
        self._fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self.tell() >= self._fail_after:
            raise ConnectionResetError("peer reset the connection")
        if self._fail_after is not None and n > 0:
            n = min(n, self._fail_after - self.tell())
        return super().read(n)


class RangeServer:
    """A fake opener that honours ``Range`` like a real HTTP server and records the requests."""

    def __init__(self, data: bytes, *, honour_range: bool = True, fail_after: int | None = None):
        self.data, self.honour_range, self.fail_after = data, honour_range, fail_after
        self.ranges: list[str | None] = []

    def __call__(self, request, timeout=None):
        rng = request.get_header("Range")
        self.ranges.append(rng)
        if rng and self.honour_range:
            start = int(rng.split("=")[1].rstrip("-"))
            body = self.data[start:]
            return _Response(body, 206, {"Content-Length": str(len(body)),
                                         "Content-Range": f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"},
                             self.fail_after)
        return _Response(self.data, 200, {"Content-Length": str(len(self.data))}, self.fail_after)


def _remote(**kw) -> RemoteFile:
    return RemoteFile(**{"filename": "data.bin", "url": "https://example.invalid/data.bin", **kw})


def test_file_url_download_records_sha256(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    remote = RemoteFile("copy.bin", src.as_uri(), size=len(PAYLOAD))
    out = download_file(remote, tmp_path / "dest", progress=False)
    assert out.read_bytes() == PAYLOAD
    assert (tmp_path / "dest" / "copy.bin.sha256").read_text() == f"{SHA}  copy.bin\n"
    assert not (tmp_path / "dest" / "copy.bin.part").exists()


def test_resume_from_partial_part_file(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data.bin.part").write_bytes(PAYLOAD[:3000])
    server = RangeServer(PAYLOAD)
    out = download_file(_remote(sha256=SHA, md5=MD5, size=len(PAYLOAD)), dest, opener=server, progress=False)
    assert server.ranges == ["bytes=3000-"]
    assert out.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data.bin.part").write_bytes(b"garbage that must not be kept")
    server = RangeServer(PAYLOAD, honour_range=False)
    out = download_file(_remote(sha256=SHA), dest, opener=server, progress=False)
    assert server.ranges == ["bytes=29-"]
    assert out.read_bytes() == PAYLOAD


def test_connection_drop_keeps_part_then_resumes(tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(OfflineError, match="connection lost after 4096 bytes"):
        download_file(_remote(sha256=SHA), dest, opener=RangeServer(PAYLOAD, fail_after=4096),
                      progress=False, chunk_size=1024)
    assert (dest / "data.bin.part").read_bytes() == PAYLOAD[:4096]
    server = RangeServer(PAYLOAD)
    out = download_file(_remote(sha256=SHA), dest, opener=server, progress=False)
    assert server.ranges == ["bytes=4096-"]
    assert out.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_an_error_naming_the_file(tmp_path):
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumError) as info:
        download_file(_remote(sha256=wrong), tmp_path, opener=RangeServer(PAYLOAD), progress=False)
    msg = str(info.value)
    assert "data.bin" in msg and wrong in msg and SHA in msg
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()
    assert (tmp_path / "data.bin.bad").read_bytes() == PAYLOAD  # kept aside for inspection, never resumed
    with pytest.raises(ChecksumError, match="MD5"):
        download_file(_remote(md5="0" * 32), tmp_path / "b", opener=RangeServer(PAYLOAD), progress=False)
    with pytest.raises(ChecksumError, match="size 10244 bytes, expected 10000"):
        download_file(_remote(size=10000), tmp_path / "c", opener=RangeServer(PAYLOAD), progress=False)


def test_hash_recorded_at_first_use_detects_later_change(tmp_path):
    remote = _remote()  # no published size or digest
    out = download_file(remote, tmp_path, opener=RangeServer(PAYLOAD), progress=False)
    assert verify_file(out, remote) == SHA
    out.write_bytes(PAYLOAD[:-1] + b"!")  # silently corrupted afterwards
    with pytest.raises(ChecksumError, match="recorded in data.bin.sha256"):
        verify_file(out, remote)


def test_offline_message_says_where_to_put_files(tmp_path):
    def no_network(request, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(OfflineError) as info:
        fetch_dataset("msd_prostate", tmp_path, opener=no_network, progress=False)
    msg = str(info.value)
    assert "Temporary failure in name resolution" in msg
    assert "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task05_Prostate.tar" in msg
    assert str(tmp_path / "msd_prostate" / "Task05_Prostate.tar") in msg
    assert "MD5 35138f08b1efaef89d7424d2bcc928db" in msg
    assert "SAMLAB_DATA_MSD_PROSTATE" in msg
    assert msg == offline_message("msd_prostate", tmp_path, "[Errno -3] Temporary failure in name resolution")
    pelvic = offline_message("pelvic_mr_li2022", tmp_path)
    assert "https://zenodo.org/record/7013610/files/data.zip" in pelvic
    assert str(tmp_path / "pelvic_mr_li2022" / "institution.txt") in pelvic
    assert "no published checksum" in pelvic


def _monai_decathlon_table(name: str) -> dict[str, str]:
    """MONAI's published DecathlonDataset.resource / .md5 table, read from its source (importing monai
    starts torch, ~20 s here)."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("monai")
    if spec is None or spec.origin is None:
        pytest.skip("monai not installed")
    tree = ast.parse((Path(spec.origin).parent / "apps" / "datasets.py").read_text())
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and cls.name == "DecathlonDataset":
            for node in cls.body:
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
                    return ast.literal_eval(node.value)
    raise AssertionError(f"DecathlonDataset.{name} not found in monai")


def test_registry_entries_are_honest():
    resource, md5 = _monai_decathlon_table("resource"), _monai_decathlon_table("md5")
    pelvic = REGISTRY["pelvic_mr_li2022"]
    assert "7013610" in pelvic.homepage
    assert all(f.sha256 is None and f.md5 is None and f.size is None for f in pelvic.files)  # nothing invented
    for key, task in (("msd_prostate", "Task05_Prostate"), ("msd_hippocampus", "Task04_Hippocampus")):
        (remote,) = REGISTRY[key].files
        assert remote.url == resource[task]
        assert remote.md5 == md5[task]  # the published reference values
        assert remote.sha256 is None


def _tar_of(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "archive.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_fetch_extracts_then_reuses(tmp_path, monkeypatch):
    archive = _tar_of(tmp_path, {"Task99/dataset.json": b"{}", "Task99/imagesTr/a.nii.gz": b"x"})
    entry = replace(REGISTRY["msd_prostate"], key="fake", data_dir="Task99",
                    files=(RemoteFile("Task99.tar", archive.as_uri(), sha256=file_digest(archive), extract=True),))
    monkeypatch.setitem(dl.REGISTRY, "fake", entry)
    root = tmp_path / "data"
    out = fetch_dataset("fake", root, progress=False)
    assert out == root / "fake" / "Task99"
    assert (out / "dataset.json").read_bytes() == b"{}"

    def must_not_download(request, timeout=None):
        raise AssertionError("already on disk: no download expected")

    assert fetch_dataset("fake", root, opener=must_not_download, progress=False) == out
    assert not list((root / "fake").glob(".extract_*"))


def test_file_placed_by_hand_is_verified_not_downloaded(tmp_path, monkeypatch):
    archive = _tar_of(tmp_path, {"Task99/dataset.json": b"{}"})
    entry = replace(REGISTRY["msd_prostate"], key="fake", data_dir="Task99",
                    files=(RemoteFile("Task99.tar", "https://example.invalid/Task99.tar", md5=file_digest(archive, "md5"),
                                      extract=True),))
    monkeypatch.setitem(dl.REGISTRY, "fake", entry)
    (tmp_path / "data" / "fake").mkdir(parents=True)
    placed = tmp_path / "data" / "fake" / "Task99.tar"  # where the offline message says to put it
    placed.write_bytes(archive.read_bytes())

    def offline(request, timeout=None):
        raise urllib.error.URLError("offline")

    assert fetch_dataset("fake", tmp_path / "data", opener=offline, progress=False) == placed.parent / "Task99"
    placed.write_bytes(archive.read_bytes() + b"x")  # a wrong file by hand is refused, naming it
    (placed.parent / "Task99.tar.sha256").unlink()
    (placed.parent / ".samlab_complete").unlink()
    with pytest.raises(ChecksumError, match="Task99.tar"):
        fetch_dataset("fake", tmp_path / "data", opener=offline, progress=False)


def test_unsafe_archive_member_refused(tmp_path, monkeypatch):
    archive = _tar_of(tmp_path, {"../evil.txt": b"owned"})
    with pytest.raises(DownloadError, match="unsafe member"):
        dl.extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_local_path_override(tmp_path, monkeypatch):
    there = tmp_path / "my_copy"
    there.mkdir()
    assert locate_dataset("msd_prostate", local_path=there) == there
    monkeypatch.setenv("SAMLAB_DATA_MSD_PROSTATE", str(there))
    assert fetch_dataset("msd_prostate", tmp_path / "unused", progress=False) == there
    monkeypatch.setenv("SAMLAB_DATA_MSD_PROSTATE", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="SAMLAB_DATA_MSD_PROSTATE"):
        locate_dataset("msd_prostate")
    with pytest.raises(KeyError, match="unknown data set"):
        locate_dataset("nope")
