import pandas as pd
import pytest

from samlab.results import COLUMNS, make_rows, read_results, to_frame, write_results


def test_make_rows_fills_defaults_and_units():
    rows = make_rows({"dataset": "d", "subject": "s1", "structure": "bladder", "method": "m"}, {"dice": 0.5, "hd95": 3.0})
    frame = to_frame(rows)
    assert list(frame.columns) == list(COLUMNS)
    assert frame.set_index("metric").loc["hd95", "unit"] == "mm"
    assert frame["slice"].tolist() == [-1, -1]


def test_unknown_column_is_refused():
    with pytest.raises(ValueError, match="unknown results column"):
        make_rows({"patient": "x"}, {"dice": 1.0})


def test_write_is_atomic_and_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "r.parquet"
    rows = make_rows({"dataset": "d", "subject": "s", "structure": "b", "method": "m"}, {"dice": 0.9})
    write_results(rows, path)
    before = path.read_bytes()

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_results(rows, path)
    assert path.read_bytes() == before, "a failed write must leave the previous file intact"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]
    monkeypatch.undo()
    assert read_results(tmp_path)["value"].tolist() == [0.9]
