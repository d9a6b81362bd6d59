"""Interactive prompting: selection rules, prompt simulation, the click session, its widget wiring,
the non-interactive fallback and the evaluation on a small phantom (real LiteMedSAM weights)."""
from __future__ import annotations

import dataclasses
import os
import types

import numpy as np
import pandas as pd
import pytest
import torch

from samlab import prompts as P
from samlab.data.phantom import STRUCTURES, make_phantom_case
from samlab.interactive import (
    Action,
    box_vs_point_tests,
    summarize,
    InteractiveSegmenter,
    InteractiveViewer,
    decode_all_outputs,
    demo_actions,
    draw_prompts,
    evaluate_interactive,
    find_finetuned_checkpoints,
    load_finetuned,
    parse_finetuned_key,
    prompt_label,
    run_scripted_session,
    select_slices,
    select_union,
    selection_gap,
    split_prompt_label,
    widgets_available,
    ModelEntry,
    build_model_entries,
    busiest_slice,
    demo_structures,
)
from samlab.metrics import dice
from samlab.models import EmbeddingCache, Predictor
from samlab.models.registry import CheckpointError
from samlab.interactive.summary import TEST_COLUMNS
from samlab.results import COLUMNS


@pytest.fixture(scope="module")
def case():
    return make_phantom_case(0, shape=(8, 64, 64))


@pytest.fixture(scope="module")
def predictor(litemedsam):
    # One in-memory cache for the module: each phantom slice is encoded once across all tests.
    return Predictor(litemedsam, device="cpu", cache=EmbeddingCache())


@pytest.fixture()
def segmenter(predictor, case):
    return InteractiveSegmenter(predictor, case.image, case.labels, STRUCTURES, structure="bladder", slice_index=5)


# --------------------------------------------------------------------------- pure logic


def test_select_union_rules_on_hand_made_candidates():
    gt = np.zeros((10, 10), bool)
    gt[0:4, 0:4] = True  # component A, 16 px
    gt[6:10, 6:10] = True  # component B, 16 px
    left, right, empty, full = gt.copy(), gt.copy(), np.zeros_like(gt), np.ones_like(gt)
    left[6:] = False
    right[:6] = False
    wide_left = left.copy()
    wide_left[0:4, 4] = True
    cand_a = np.stack([left, empty, wide_left])
    cand_b = np.stack([empty, right, full])
    iou_a, iou_b = np.array([0.1, 0.9, 0.5]), np.array([0.2, 0.3, 0.95])

    single = select_union([cand_a, cand_b], [iou_a, iou_b], gt, "single")  # left + empty
    confidence = select_union([cand_a, cand_b], [iou_a, iou_b], gt, "confidence")  # empty + full
    oracle = select_union([cand_a, cand_b], [iou_a, iou_b], gt, "oracle")  # left + right
    assert dice(single, gt) == pytest.approx(32 / 48)
    assert dice(confidence, gt) == pytest.approx(64 / 132)
    assert dice(oracle, gt) == 1.0
    assert not select_union([], [], gt, "oracle").any()
    with pytest.raises(ValueError, match="unknown selection rule"):
        select_union([cand_a], [iou_a], gt, "best")


def test_prompt_labels_round_trip():
    assert prompt_label("point_deep", "oracle") == "point_deep|oracle"
    assert split_prompt_label("box_noisy|confidence") == ("box_noisy", "confidence")
    with pytest.raises(ValueError, match="unknown prompt kind"):
        prompt_label("box", "oracle")
    with pytest.raises(ValueError, match="not an interactive prompt label"):
        split_prompt_label("oracle_box")


def test_draw_prompts_follow_the_paper_simulation():
    mask = np.zeros((400, 400), bool)
    mask[50:350, 40:360] = True  # 300 x 320 px: 10 % of the side exceeds the 20 px cap
    mask[380:390, 380:390] = True  # a second, small component
    tight = P.box_from_mask(P.connected_components(mask)[0])
    boxes = draw_prompts(mask, "box_noisy", np.random.default_rng(1), max_components=4)
    assert len(boxes) == 2
    assert np.all(np.abs(boxes[0] - tight) <= 20.0) and not np.array_equal(boxes[0], tight)
    again = draw_prompts(mask, "box_noisy", np.random.default_rng(1), max_components=4)
    assert all(np.array_equal(a, b) for a, b in zip(boxes, again))
    assert len(draw_prompts(mask, "box_noisy", np.random.default_rng(1), max_components=1)) == 1
    rows, cols = np.arange(400)[:, None], np.arange(400)[None, :]
    # distance of a pixel of the big rectangle to the nearest background pixel (what the EDT gives)
    distance = np.minimum(np.minimum(rows - 49, 350 - rows), np.minimum(cols - 39, 360 - cols))
    for seed in range(5):
        x, y = draw_prompts(mask, "point_deep", np.random.default_rng(seed), max_components=1)[0].astype(int)
        assert mask[y, x]
        assert distance[y, x] > np.median(distance[50:350, 40:360])  # deeper than the median pixel
    assert draw_prompts(np.zeros((5, 5), bool), "point_deep", np.random.default_rng(0)) == []


def test_select_slices_spreads_over_labelled_slices():
    labels = np.zeros((10, 4, 4), np.uint8)
    labels[2:9, 1, 1] = 1
    assert select_slices(labels, {"a": (1,)}, None) == [2, 3, 4, 5, 6, 7, 8]
    assert select_slices(labels, {"a": (1,)}, 3) == [2, 5, 8]
    assert select_slices(labels, {"b": (7,)}, 3) == []


def test_demo_slice_and_structures():
    labels = np.zeros((3, 12, 12), np.uint8)
    labels[0, 1:3, 1:3] = 1  # slice 0: one structure
    labels[1, 1:5, 1:5] = 1  # slice 1: big one-piece "a", small one-piece "b", two-piece "c"
    labels[1, 8:10, 8:10] = 2
    labels[1, 6, 1:3] = 3
    labels[1, 6, 9:11] = 3
    labels[2, 0:9, 0:9] = 1  # slice 2: more pixels but one structure
    structures = {"a": (1,), "b": (2,), "c": (3,)}
    assert busiest_slice(labels, structures) == 1
    assert demo_structures(labels[1], structures, n=3) == ["a", "b", "c"]
    assert demo_structures(labels[1], structures, n=2) == ["a", "c"]  # keep the two-piece example
    assert demo_structures(labels[0], structures, n=3) == ["a"]


def test_finetuned_keys_and_discovery(tmp_path):
    assert parse_finetuned_key("litemedsam-decoder-lora") == ("litemedsam", "decoder", "lora")
    with pytest.raises(ValueError, match="<model>-<scope>-<method>"):
        parse_finetuned_key("vit_b-decoder-lora")  # vit_b is a grid backbone, not a registry model
    assert find_finetuned_checkpoints(tmp_path) == {}
    root = tmp_path / "checkpoints" / "finetune"  # notebook 04: <config>-<settings hash>/best.pt
    old, new = root / "litemedsam-decoder-lora-0123456789", root / "litemedsam-decoder-lora-abcdef0123"
    for folder in (old, new, root / "sam_vit_b-encoder_decoder-adapter-fedcba9876", root / "notes-0123456789"):
        folder.mkdir(parents=True)
        (folder / "best.pt").write_bytes(b"x")
        (folder / "last.pt").write_bytes(b"x")
    os.utime(old / "best.pt", (1, 1))  # the older of two runs of one configuration
    (root / "litemedsam-encoder_decoder-lora-1111111111").mkdir()
    (root / "litemedsam-encoder_decoder-lora-1111111111" / "last.pt").write_bytes(b"x")  # no best.pt: skipped
    assert find_finetuned_checkpoints(tmp_path) == {
        "litemedsam-decoder-lora": str(new / "best.pt"),
        "sam_vit_b-encoder_decoder-adapter": str(root / "sam_vit_b-encoder_decoder-adapter-fedcba9876" / "best.pt"),
    }


# --------------------------------------------------------------------------- the model


def test_decode_all_outputs_matches_predictor_decode(predictor, case):
    embedding = predictor.embed(case.image[5])
    gt = np.isin(case.labels[5], STRUCTURES["bladder"])
    box = P.box_from_mask(gt)[None]
    point = P.interior_point(gt)[None, None]
    for kwargs in ({"boxes": box}, {"points": point, "point_labels": np.ones((1, 1))}):
        logits, iou = decode_all_outputs(predictor, embedding, **kwargs)
        assert logits.shape == (1, 4, 64, 64) and iou.shape == (1, 4)
        single = predictor.decode(embedding, multimask=False, **kwargs)
        multi = predictor.decode(embedding, multimask=True, **kwargs)
        np.testing.assert_allclose(logits[:, 0], single.logits, atol=1e-4)
        np.testing.assert_allclose(logits[:, 1:], multi.logits, atol=1e-4)
        np.testing.assert_allclose(iou[:, 1:], multi.iou, atol=1e-5)


def test_box_prompt_follows_the_structure(segmenter):
    gt_bladder = segmenter.ground_truth
    segmenter.set_box(*P.box_from_mask(gt_bladder))
    bladder = segmenter.update()
    assert bladder.dice == dice(bladder.mask, gt_bladder)
    assert bladder.dice > 0.9  # convex, bright: LiteMedSAM's easy case (measured 0.986)

    segmenter.set_structure("obturator_internus")
    assert segmenter.box is None and segmenter.points == []  # a new object needs a new prompt
    gt_oi = segmenter.ground_truth
    segmenter.set_box(*P.box_from_mask(gt_oi))
    other = segmenter.update()
    assert other.dice == dice(other.mask, gt_oi)
    assert dice(other.mask, bladder.mask) < 0.2  # a box elsewhere segments something else


def test_background_point_changes_the_mask(segmenter):
    gt = segmenter.ground_truth
    segmenter.set_box(*P.box_from_mask(gt))
    before = segmenter.update()
    x, y = P.interior_point(gt)
    segmenter.add_point(x, y, foreground=False)
    after = segmenter.update()
    assert after.points == [(float(x), float(y), False)]
    assert after.mask.sum() < before.mask.sum()  # "not here" removes pixels
    assert after.dice == dice(after.mask, gt) < before.dice


def test_segmenter_rejects_bad_input(segmenter, predictor, case):
    none = segmenter.update()
    assert not none.mask.any() and none.dice == 0.0 and "no prompt" in none.text
    with pytest.raises(ValueError, match="outside the volume"):
        segmenter.set_slice(8)
    with pytest.raises(ValueError, match="unknown structure 'liver'"):
        segmenter.set_structure("liver")
    with pytest.raises(ValueError, match="outside the 64x64 slice"):
        segmenter.add_point(70, 3)
    with pytest.raises(ValueError, match="of one shape"):
        InteractiveSegmenter(predictor, case.image[:, :32], case.labels, STRUCTURES)
    segmenter.set_box(70, 50, -4, 10)  # corners in any order, clipped
    assert segmenter.box == (0.0, 10.0, 63.0, 50.0)


def test_oracle_selection_in_the_session_is_best_of_three(predictor, case):
    seg = InteractiveSegmenter(predictor, case.image, case.labels, STRUCTURES, structure="bladder",
                               slice_index=5, selection="oracle")
    x, y = P.interior_point(seg.ground_truth)
    seg.add_point(x, y)
    best = seg.update()
    seg.selection = "confidence"
    chosen = seg.update()
    candidates = predictor.decode(predictor.embed(case.image[5]), points=np.array([[[x, y]]]), multimask=True)
    scores = [dice(m, seg.ground_truth) for m in candidates.masks()[0]]
    assert best.dice == pytest.approx(max(scores))
    assert best.dice >= chosen.dice
    assert chosen.dice == pytest.approx(scores[int(np.argmax(candidates.iou[0]))])


# --------------------------------------------------------------------------- widgets


def _click(viewer, x, y, button=1, key=None, inside=True):
    return types.SimpleNamespace(inaxes=viewer.ax if inside else None, xdata=x, ydata=y, button=button, key=key)


def test_viewer_callbacks_drive_the_segmenter(segmenter):
    viewer = InteractiveViewer(segmenter)
    assert "no prompt yet" in viewer.status.value
    gt = segmenter.ground_truth
    x0, y0, x1, y1 = P.box_from_mask(gt)

    viewer.on_click(_click(viewer, 30, 30))  # point mode: left click = foreground
    viewer.on_click(_click(viewer, 5, 5, button=3))  # right click = background
    viewer.on_click(_click(viewer, 6, 6, key="shift"))  # shift+click = background
    viewer.on_click(_click(viewer, 7, 7, inside=False))  # outside the image: ignored
    viewer.on_click(_click(viewer, 8, 8, button=2))  # middle button: ignored
    assert segmenter.points == [(30.0, 30.0, True), (5.0, 5.0, False), (6.0, 6.0, False)]
    shown = viewer.state
    assert shown.dice == dice(shown.mask, gt)
    assert f"Dice {shown.dice:.3f}" in viewer.status.value

    viewer.clear_button.click()
    assert segmenter.points == []
    viewer.mode.value = "box"
    assert viewer.selector.get_active()
    viewer.on_click(_click(viewer, 30, 30))  # in box mode a click is not a point
    assert segmenter.points == []
    viewer.on_box(_click(viewer, x1, y1), _click(viewer, x0, y0))
    assert segmenter.box == (x0, y0, x1, y1)
    boxed = viewer.state
    assert boxed.dice == dice(boxed.mask, gt) > 0.9
    assert f"Dice {boxed.dice:.3f}" in viewer.status.value and viewer._box.get_visible()

    viewer.picker.value = "rectum"
    assert segmenter.structure == "rectum" and segmenter.box is None
    viewer.slider.value = 4
    assert segmenter.slice_index == 4
    assert viewer.state.slice_index == 4 and "rectum, slice 4" in viewer.status.value


def test_widget_detection_falls_back_outside_a_front_end(monkeypatch):
    monkeypatch.delenv("SAMLAB_WIDGETS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    decision, reason = widgets_available("auto")
    assert decision is False and "not running in a Jupyter kernel" in reason  # pytest: plain python
    assert widgets_available("on")[0] and not widgets_available("off")[0]
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        widgets_available("yes")

    # A kernel as papermill / nbval start it: no front-end marker in the environment.
    shell = types.SimpleNamespace(kernel=object(), user_ns={})
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    decision, reason = widgets_available("auto")
    assert decision is False and "papermill" in reason
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/student/06_interactive.ipynb")  # JupyterLab sets this
    assert widgets_available("auto")[0] is True
    monkeypatch.setenv("SAMLAB_WIDGETS", "0")
    assert widgets_available("auto")[0] is False


def test_scripted_session_replays_clicks(segmenter):
    segmenter.set_slice(4)  # bladder and prostate both present
    actions = demo_actions(segmenter, structures=["bladder", "prostate"], seed=0)
    kinds = [a.kind for a in actions]
    assert kinds[:7] == ["slice", "structure", "point", "correct", "clear", "box", "correct"]
    table, states = run_scripted_session(segmenter, actions, verbose=False)
    assert list(table.columns) == ["step", "structure", "slice", "action", "dice", "mask_px", "gt_px"]
    assert len(table) == len(states) == 8  # per structure: click, correction, box, correction
    assert table["structure"].tolist() == ["bladder"] * 4 + ["prostate"] * 4
    for row, state in zip(table.itertuples(), states):
        gt = np.isin(segmenter.labels[state.slice_index], STRUCTURES[state.structure])
        assert row.dice == dice(state.mask, gt)
    assert table["action"].str.startswith("correction: ").any()
    bladder = table[table["structure"] == "bladder"]
    assert bladder["dice"].iloc[2] > bladder["dice"].iloc[0] + 0.5  # box >> one click for a box-trained model
    # The same actions on a fresh session give the same numbers (seeded, no hidden state).
    again, _ = run_scripted_session(segmenter, demo_actions(segmenter, ["bladder", "prostate"], 0), verbose=False)
    assert again["dice"].tolist() == table["dice"].tolist()
    with pytest.raises(ValueError, match="unknown action"):
        run_scripted_session(segmenter, [Action("scroll")], verbose=False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- evaluation


def test_evaluation_on_a_tiny_phantom(predictor, case):
    entry = ModelEntry("litemedsam", predictor, {"backbone": "litemedsam", "init": "pretrained"})
    calls = predictor.encoder_calls
    result = evaluate_interactive([entry], [case], STRUCTURES, n_draws=2, slices_per_case=2, seed=3,
                                  dataset="phantom", progress=False)
    frame = result.results
    assert list(frame.columns) == list(COLUMNS)
    assert result.slices == {case.case_id: [0, 7]}
    assert result.encoder_calls == predictor.encoder_calls - calls <= 2  # one encoder pass per slice at most
    assert set(frame["prompt"]) == {prompt_label(k, s) for k in ("box_noisy", "point_deep")
                                    for s in ("single", "confidence", "oracle")}
    assert set(frame["seed"]) == {3, 4} and set(frame["method"]) == {"interactive"}
    # rows: 2 slices; slice 0 has rectum, slice 7 bladder + rectum -> 3 structures x 2 draws x 6 prompts
    assert len(frame) == 3 * 2 * 6
    for kind in ("box_noisy", "point_deep"):
        gap = selection_gap(frame, kind)
        assert len(gap) == 6 and (gap["diff"] >= 0).all()  # oracle >= confidence, pair by pair
    means = frame.groupby("prompt")["value"].mean()
    assert means["box_noisy|single"] > means["point_deep|single"] + 0.3  # LiteMedSAM was trained with boxes

    again = evaluate_interactive([entry], [case], STRUCTURES, n_draws=2, slices_per_case=2, seed=3,
                                 dataset="phantom", progress=False)
    assert again.encoder_calls == 0  # every embedding came from the cache
    assert again.results["value"].tolist() == frame["value"].tolist()
    with pytest.raises(ValueError, match="n_draws"):
        evaluate_interactive([entry], [case], STRUCTURES, n_draws=0, progress=False)


def test_finetuned_checkpoint_round_trip(tmp_path, predictor, case):
    from samlab.finetune import GridConfig, build_model
    from samlab.train.checkpoint import CHECKPOINT_FORMAT, save_checkpoint, trainable_state

    loaded = build_model(GridConfig("litemedsam", "decoder", "lora"), "box", seed=0)
    state = trainable_state(loaded.module)
    lora = [k for k in state if "lora_B" in k]
    assert lora, "apply_peft added no LoRA weights to the decoder"
    state[lora[0]] = torch.full_like(state[lora[0]], 0.01)  # as if training had moved it
    meta = {"model": "litemedsam", "weights_sha256": loaded.sha256, "mode": "box", "seed": 0,
            "peft": dataclasses.asdict(loaded.module.samlab_peft)}
    path = save_checkpoint({"format": CHECKPOINT_FORMAT, "meta": meta, "model": state}, tmp_path / "best.pt")

    tuned = load_finetuned("litemedsam-decoder-lora", path)
    assert tuned.weights == f"finetuned:{path}"
    assert torch.equal(tuned.module.state_dict()[lora[0]], state[lora[0]])
    entries = build_model_entries([], finetuned={"litemedsam-decoder-lora": str(path)}, cache=predictor.cache)
    assert entries[0].context == {"backbone": "litemedsam", "scope": "decoder", "peft": "lora", "init": "pretrained"}
    # decoder-only tuning leaves the encoder alone, so the released model's cached embeddings are reused
    assert entries[0].predictor.cache_namespace == predictor.cache_namespace
    calls = entries[0].predictor.encoder_calls
    predictor.embed(case.image[5])
    entries[0].predictor.embed(case.image[5])
    assert entries[0].predictor.encoder_calls == calls

    auto = {**meta, "mode": "automatic"}
    save_checkpoint({"format": CHECKPOINT_FORMAT, "meta": auto, "model": state}, tmp_path / "auto.pt")
    with pytest.raises(CheckpointError, match="prompt-free"):
        load_finetuned("litemedsam-decoder-lora", tmp_path / "auto.pt")
    with pytest.raises(CheckpointError, match="not litemedsam-decoder-adapter"):
        load_finetuned("litemedsam-decoder-adapter", path)


# --------------------------------------------------------------------------- tables and tests on the results


def _synthetic_results(box_minus_point: dict[tuple[str, str], np.ndarray]) -> pd.DataFrame:
    """Tidy interactive rows: per (model key, rule), point Dice varies by subject, box = point + the given gap."""
    from samlab.results import make_rows, to_frame

    rows = []
    for (key, rule), gaps in box_minus_point.items():
        backbone, _, rest = key.partition("-")
        scope, _, peft = rest.rpartition("-")
        for i, gap in enumerate(gaps):
            point = 0.1 + 0.05 * i
            for kind, value in (("point_deep", point), ("box_noisy", point + gap)):
                rows += make_rows({"dataset": "phantom", "subject": f"case{i}", "slice": 3, "structure": "bladder",
                                   "method": "interactive", "prompt": prompt_label(kind, rule), "seed": 0,
                                   "backbone": backbone, "scope": scope, "peft": peft, "init": "pretrained"},
                                  {"dice": value})
    return to_frame(rows)


def test_box_vs_point_tests_one_row_per_model_and_rule(capsys):
    rng = np.random.default_rng(0)
    gaps = {("litemedsam", "single"): 0.6 + 0.01 * rng.standard_normal(8),
            ("litemedsam", "oracle"): 0.3 + 0.01 * rng.standard_normal(8),
            # same backbone, fine-tuned: must be tested apart from the released weights
            ("litemedsam-decoder-lora", "single"): -0.05 + 0.01 * rng.standard_normal(8)}
    results = _synthetic_results(gaps)
    def entry(label, **context):  # the tests read only the label and the results columns, not the predictor
        return ModelEntry(label, None, {"init": "pretrained", **context})  # type: ignore[arg-type]

    entries = [entry("litemedsam", backbone="litemedsam"),
               entry("litemedsam-decoder-lora", backbone="litemedsam", scope="decoder", peft="lora"),
               entry("sam_vit_b", backbone="sam_vit_b")]
    table = box_vs_point_tests(results, entries, selections=("single", "oracle"), seed=0)
    assert list(table.columns) == TEST_COLUMNS
    # rules a model has no rows for, and a model without rows, are left out with the reason printed
    assert list(zip(table["model"], table["selection"])) == [("litemedsam", "single"), ("litemedsam", "oracle"),
                                                              ("litemedsam-decoder-lora", "single")]
    printed = capsys.readouterr().out
    assert "litemedsam-decoder-lora oracle: no test" in printed and "sam_vit_b single: no test" in printed
    for row in table.itertuples():
        expected = gaps[(row.model, row.selection)]
        assert row.n == 8
        assert row.mean_diff == pytest.approx(expected.mean())
        assert row.ci_low <= row.mean_diff <= row.ci_high
    assert table.set_index(["model", "selection"]).loc[("litemedsam", "single"), "p"] < 0.01
    # 8 slices of 2 subjects are not 8 independent pairs: reported with their difference, not tested
    clustered = results.assign(subject=results["subject"].map(lambda s: "a" if s < "case4" else "b"),
                               slice=results["subject"].str[-1].astype(int))
    few = box_vs_point_tests(clustered, entries[:1], selections=("single",), seed=0)
    assert few["n"].tolist() == [8] and few["test"].tolist() == ["not tested (slices of 2 subjects < 5)"]
    assert few["p"].isna().all() and (few["stars"] == "").all()
    assert few["mean_diff"].iloc[0] == pytest.approx(gaps[("litemedsam", "single")].mean())
    # without point prompts there is nothing to test
    boxes_only = results[results["prompt"].str.startswith("box_noisy")]
    assert box_vs_point_tests(boxes_only, entries, verbose=False).empty


def test_summarize_names_fine_tuned_models_and_orders_rules():
    results = _synthetic_results({("litemedsam", "oracle"): np.full(3, 0.5),
                                  ("litemedsam", "single"): np.full(3, 0.5),
                                  ("litemedsam-decoder-lora", "confidence"): np.full(3, 0.2)})
    table = summarize(results)
    assert list(table.columns) == ["single", "confidence", "oracle"]  # the order of SELECTIONS, not of the rows
    assert set(table.index) == {(m, k) for m in ("litemedsam", "litemedsam-decoder-lora")
                                for k in ("point_deep", "box_noisy")}
    # point Dice of the three subjects: 0.10, 0.15, 0.20 -> mean 0.150, sd 0.050; box = point + 0.5
    assert table.loc[("litemedsam", "box_noisy"), "single"] == "0.650 ± 0.050"
    assert table.loc[("litemedsam-decoder-lora", "point_deep"), "confidence"] == "0.150 ± 0.050"


def test_package_files_import_downwards_only():
    """simulate < models < evaluate < summary < session < viewer < plots; nothing else in samlab imports them."""
    import ast
    from pathlib import Path

    import samlab

    root = Path(samlab.__file__).parent
    order = ["simulate", "models", "evaluate", "summary", "session", "viewer", "plots"]
    for position, name in enumerate(order):
        path = root / "interactive" / f"{name}.py"
        assert len(path.read_text().splitlines()) < 600, f"{path} has grown past 600 lines"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                sibling = (node.module or "").split(".")[0]
                assert sibling in order[:position], f"{path}: imports .{sibling}, which is not below {name}"
    for path in root.rglob("*.py"):
        if "interactive" in path.relative_to(root).parts:
            continue
        text = path.read_text()
        for spelling in ("samlab.interactive", "from .interactive", "from ..interactive"):
            assert spelling not in text, f"{path} imports the interactive package from below ({spelling!r})"
