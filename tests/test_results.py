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


@pytest.mark.parametrize("method, prompt, mode", [
    ("zero_shot", "oracle_box", "box"), ("zero_shot", "oracle_box+5px", "box"), ("zero_shot", "nnunet_part_boxes", "box"),
    ("zero_shot", "oracle_points", "point"), ("interactive", "point_noisy|oracle", "point"),
    ("finetune", "", "automatic"), ("finetune", "none", "automatic"), ("nnunet", "none", "none"), ("nnunet", "", "none"),
])
def test_mode_is_derived_from_the_prompt_when_the_producer_does_not_set_it(method, prompt, mode):
    rows = make_rows({"dataset": "d", "subject": "s", "structure": "b", "method": method, "prompt": prompt}, {"dice": 0.5})
    assert to_frame(rows)["mode"].tolist() == [mode]


def test_mode_and_recipe_set_by_a_producer_are_kept(tmp_path):
    rows = make_rows({"dataset": "d", "subject": "s", "structure": "b", "method": "finetune", "prompt": "oracle_box",
                      "mode": "automatic", "recipe": "paper_adam_1e-4"}, {"dice": 0.5})
    frame = to_frame(rows)
    assert (frame["mode"].iloc[0], frame["recipe"].iloc[0]) == ("automatic", "paper_adam_1e-4")
    assert to_frame(make_rows({"dataset": "d", "subject": "s", "structure": "b", "method": "m"}, {"dice": 1}))["recipe"].iloc[0] == ""


def test_old_parquet_files_without_mode_or_recipe_get_them(tmp_path):
    old = pd.DataFrame([{"dataset": "d", "subject": "s", "slice": -1, "structure": "b", "method": "zero_shot",
                         "backbone": "litemedsam", "scope": "", "peft": "", "init": "", "prompt": "oracle_points",
                         "shots": -1, "seed": 0, "metric": "dice", "value": 0.7, "unit": ""}])
    old.to_parquet(tmp_path / "zero_shot.parquet", index=False)
    frame = read_results(tmp_path / "zero_shot.parquet")
    assert (frame["mode"].iloc[0], frame["recipe"].iloc[0]) == ("point", "")
    assert list(frame.columns) == list(COLUMNS)
