"""Point-prompted fine-tuning (the 18-configuration study's interactive variant, §2.3 and Fig. 10).

* a structure's point prompt is a deep click in each of its connected pieces (largest first), mapped
  into the input frame as boxes are, and padded to a fixed width with SAM's "not a point";
* a structure's mask does not depend on which other structures share its decoder call (the padding
  is why);
* training in point mode resumes to the same weights as an uninterrupted run (the clicks come from the
  run's generator) and learns: from LiteMedSAM's real (box-trained) weights it lowers the validation loss;
* evaluation scores every configuration of a run on the same clicks and labels the rows ``point``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from samlab import prompts as P
from samlab.data.phantom import make_phantom_case
from samlab.finetune import GridConfig, build_model, evaluate, make_grid, predict_case
from samlab.models import EmbeddingCache, Predictor, get_spec, load_model
from samlab.models.predictor import _geometry
from samlab.peft import apply_peft
from samlab.train import get_recipe, load_checkpoint, make_items, slices_from_volume, train
from samlab.train.data import clicks_in_input_frame, stack_clicks

pytestmark = [
    pytest.mark.filterwarnings("ignore:Importing from timm:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:training on cached embeddings:UserWarning"),
]

STRUCTURES = {"bone": (2,), "rectum": (6,)}


@pytest.fixture(scope="module")
def phantom_slices():
    case = make_phantom_case(3, shape=(8, 48, 48))
    return slices_from_volume(case.case_id, case.image, case.labels, case.spacing)


@pytest.fixture(scope="module")
def cache() -> EmbeddingCache:
    return EmbeddingCache(max_items_in_memory=64)


def test_a_point_prompt_clicks_deep_inside_each_piece_largest_first():
    mask = np.zeros((40, 40), bool)
    mask[2:7, 2:7] = True  # 25 px
    mask[20:35, 10:31] = True  # 315 px: the first click
    clicks = P.structure_clicks(mask, np.random.default_rng(0))
    assert clicks.shape == (2, 2)
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    for (x, y), (y0, y1, x0, x1) in zip(clicks.astype(int), [(20, 35, 10, 31), (2, 7, 2, 7)]):
        assert y0 <= y < y1 and x0 <= x < x1, "each click lies in its own piece, the largest piece first"
        piece = np.zeros_like(mask)
        piece[y0:y1, x0:x1] = True
        assert distance[y, x] > np.median(distance[piece]), "a click is deeper than the piece's median edge distance"
    assert len(P.structure_clicks(mask, np.random.default_rng(0), max_clicks=1)) == 1
    with pytest.raises(ValueError, match="empty mask"):
        P.structure_clicks(np.zeros((5, 5), bool), np.random.default_rng(0))
    # the input frame: 48 -> 256 px, the same scale as a box; a prompt of 2 clicks padded to 4 with "not a point"
    geometry = _geometry(get_spec("litemedsam"), 40, 40)
    scaled = clicks_in_input_frame(mask, geometry, np.random.default_rng(0))
    np.testing.assert_allclose(scaled, clicks * (256 / 40), rtol=1e-6)
    coords, labels = stack_clicks([scaled, scaled[:1]])
    assert coords.shape == (2, 4, 2) and labels.tolist() == [[1, 1, -1, -1], [1, -1, -1, -1]]
    with pytest.raises(ValueError, match="more than width"):
        stack_clicks([np.zeros((5, 2), np.float32)])


def test_a_structures_mask_does_not_depend_on_its_decoder_call_companions(litemedsam):
    case = make_phantom_case(1, shape=(6, 64, 64))
    z = 3
    predictor = Predictor(litemedsam)
    embedding = predictor.embed(case.image[z])
    masks = {name: np.isin(case.labels[z], values) for name, values in {"bone": (2,), "bladder": (1,)}.items()}
    clicks = {name: P.structure_clicks(m, np.random.default_rng(1)) for name, m in masks.items()}
    assert len(clicks["bone"]) != len(clicks["bladder"]), "the test needs prompts of different click counts"
    coords, labels = stack_clicks(list(clicks.values()))
    together = predictor.decode(embedding, points=coords, point_labels=labels).logits
    for i, name in enumerate(clicks):
        coords, labels = stack_clicks([clicks[name]])
        alone = predictor.decode(embedding, points=coords, point_labels=labels).logits[0]
        np.testing.assert_allclose(together[i], alone, atol=1e-4)


def _point_model():
    torch.manual_seed(0)
    loaded = load_model("litemedsam")
    apply_peft(loaded.module, "lora", "decoder")
    return loaded


class _Killed(Exception):
    pass


def test_point_mode_training_resumes_exactly_and_lowers_the_validation_loss(phantom_slices, cache, tmp_path):
    items = make_items(phantom_slices, STRUCTURES, "point")
    assert items == make_items(phantom_slices, STRUCTURES, "box"), "point mode trains the box mode's items"
    recipe = get_recipe("litemedsam_refine", max_epochs=2, batch_size=2, lr=1e-3)

    def run(out, **kwargs):
        return train(_point_model(), phantom_slices[3:5], phantom_slices[5:6], STRUCTURES, recipe, mode="point",
                     cache=cache, out_dir=out, progress=False, **kwargs)

    straight = run(tmp_path / "straight")

    def kill_after_first_epoch(row):
        if row["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        run(tmp_path / "killed", on_epoch_end=kill_after_first_epoch)
    resumed = run(tmp_path / "killed")
    assert resumed.resumed_from_epoch == 1 and resumed.history == straight.history
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("straight", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run drew the same clicks"
    # LiteMedSAM learnt boxes, not clicks: two epochs on clicks lower the loss on a held-out slice
    val = [row["val_loss"] for row in straight.history]
    assert min(val[1:]) < val[0], f"point-mode training did not lower the validation loss: {val}"
    assert load_checkpoint(tmp_path / "straight" / "last.pt")["meta"]["mode"] == "point"


def test_point_mode_rows_are_labelled_and_every_model_gets_the_same_clicks(cache):
    full = make_phantom_case(3, shape=(8, 48, 48))
    case = replace(full, image=full.image[3:6], labels=full.labels[3:6])
    (config,) = make_grid(["litemedsam"], ["decoder"], ["lora"], modes=["point"])
    assert config.name == "litemedsam-decoder-lora-point" and config.prompt == "point"
    loaded = build_model(config)
    frame, predictions = evaluate(loaded, [case], STRUCTURES, "point", context={
        "method": "finetune", "backbone": "litemedsam", "prompt": config.prompt, "seed": 0}, cache=cache,
        progress=False)
    assert set(frame["mode"]) == {"point"} and set(frame["prompt"]) == {"point"}
    for name, values in STRUCTURES.items():
        empty = ~np.isin(case.labels, values).any(axis=(1, 2))
        assert not predictions[(case.case_id, name)][empty].any(), "slices without the structure get no click"
    # the clicks are keyed by (seed, case, slice, structure), not drawn from a shared stream: a rerun (or any
    # other model) sees the same ones, another seed others
    spy = _ClickSpy(Predictor(loaded, cache=cache))
    predict_case(spy, case, STRUCTURES, "point", prompt_seed=0)
    again = _ClickSpy(Predictor(loaded, cache=cache))
    predict_case(again, case, STRUCTURES, "point", prompt_seed=0)
    other = _ClickSpy(Predictor(loaded, cache=cache))
    predict_case(other, case, STRUCTURES, "point", prompt_seed=1)
    assert spy.points and all(np.array_equal(a, b) for a, b in zip(spy.points, again.points))
    assert not all(np.array_equal(a, b) for a, b in zip(spy.points, other.points))


class _ClickSpy:
    """A predictor that records the clicks it is asked to decode."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.points = predictor, []

    def embed(self, image):
        return self.predictor.embed(image)

    def decode(self, embedding, **prompts):
        self.points.append(np.asarray(prompts["points"]))
        return self.predictor.decode(embedding, **prompts)


def test_grid_configurations_know_the_point_mode():
    assert GridConfig("litemedsam", "decoder", "vanilla", mode="point").name == "litemedsam-decoder-vanilla-point"
    with pytest.raises(ValueError, match="unknown scope/method/mode"):
        make_grid(["litemedsam"], ["decoder"], ["lora"], modes=["clicks"])


def test_a_mixed_batch_decodes_each_row_as_its_own_prompt_kind(litemedsam):
    """SupSAM's phase 1 draws a box or a point per item: a mixed batch gives each row what its prompt alone gives."""
    from samlab.train.forward import decode, decode_mixed

    case = make_phantom_case(1, shape=(6, 64, 64))
    predictor = Predictor(litemedsam)
    geometry = _geometry(litemedsam.spec, 64, 64)
    features = torch.cat([predictor.embed(case.image[z]).features for z in (1, 2, 3)])
    masks = [np.isin(case.labels[z], (3,)) for z in (1, 2, 3)]  # obturator internus: two pieces per slice
    from samlab.train.data import box_in_input_frame

    boxes = torch.from_numpy(np.stack([box_in_input_frame(masks[i], geometry) for i in (0, 2)]))
    coords, labels = stack_clicks([clicks_in_input_frame(masks[1], geometry, np.random.default_rng(0))])
    points = (torch.from_numpy(coords), torch.from_numpy(labels))
    model = litemedsam.module
    with torch.no_grad():
        mixed, iou = decode_mixed(model, features, boxes, points, torch.tensor([True, False, True]), False)
        box_rows, box_iou = decode(model, features[[0, 2]], boxes, False)
        point_rows, _ = decode(model, features[1:2], None, False, points)
        shared, _ = decode_mixed(model, features[:1], boxes, points, torch.tensor([False, True, True]), False)
        shared_points, _ = decode(model, features[:1], None, False, points)
    torch.testing.assert_close(mixed[[0, 2]], box_rows)
    torch.testing.assert_close(mixed[1:2], point_rows)
    torch.testing.assert_close(iou[[0, 2]], box_iou)
    torch.testing.assert_close(shared[0:1], shared_points)
    assert not torch.allclose(mixed[0], decode(model, features[:1], None, False, (points[0], points[1]))[0][0])
    with pytest.raises(ValueError, match="2 box rows and 1 point rows"):
        decode_mixed(model, features, boxes[:1], points, torch.tensor([True, False, True]), False)


def test_mixed_mode_trains_on_boxes_and_points_and_is_not_a_grid_mode(phantom_slices, cache, tmp_path, monkeypatch):
    """SupSAM's phase 1: a box or a point per example, and one structure per slice and epoch (§2.3)."""
    from samlab.train import loop

    batches = []
    real = loop._Run._batch

    def spy(self, items, draws):
        batches.append([(item.slice_index, item.structure, draw[-1] is None) for item, draw in zip(items, draws)])
        return real(self, items, draws)

    monkeypatch.setattr(loop._Run, "_batch", spy)
    recipe = get_recipe("litemedsam_refine", max_epochs=3, batch_size=2, lr=1e-3)
    result = train(_point_model(), phantom_slices[3:5], phantom_slices[5:6], STRUCTURES, recipe, mode="mixed",
                   cache=cache, out_dir=tmp_path, progress=False, structure_per_slice=True)
    assert result.mode == "mixed" and load_checkpoint(tmp_path / "last.pt")["meta"]["mode"] == "mixed"
    assert result.n_train_items == 4 and len(batches) == 3, "an epoch is one batch: 2 slices, not 4 items"
    for epoch in batches:
        assert sorted(s for s, _, _ in epoch) == [0, 1], f"each slice once per epoch: {epoch}"
    kinds = [is_box for epoch in batches for _, _, is_box in epoch]
    assert any(kinds) and not all(kinds), f"a mixed run drew only one prompt kind: {kinds}"
    assert len({structure for epoch in batches for _, structure, _ in epoch}) == 2, "both structures get drawn"
    assert all(np.isfinite(row["val_loss"]) for row in result.history)
    with pytest.raises(ValueError, match="unknown scope/method/mode"):
        make_grid(["litemedsam"], ["decoder"], ["lora"], modes=["mixed"])
    with pytest.raises(ValueError, match="automatic mode has no prompt"):
        train(_point_model(), phantom_slices[3:5], phantom_slices[5:6], STRUCTURES, recipe, mode="automatic",
              cache=cache, progress=False, structure_per_slice=True)
