"""Fine-tuning engine: recipes, losses (hand-computed), targets and prompts, checkpoints, resume, grid helpers.

Training tests use LiteMedSAM with random weights (the loop's mechanics do not depend on the
weights) on a few 48 x 48 phantom slices; embeddings are cached in memory and shared, so the
encoder runs a handful of times per session.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from samlab.data.phantom import make_phantom_case
from samlab.models import EmbeddingCache, load_model
from samlab.models.predictor import _geometry
from samlab.peft import apply_peft
from samlab.train import (
    RECIPES,
    SliceRecord,
    TrainCheckpointError,
    TrainResult,
    get_recipe,
    load_checkpoint,
    make_items,
    segmentation_loss,
    set_train_mode,
    slices_from_volume,
    train,
    trainable_state,
)
from samlab.train.data import (
    box_in_input_frame,
    classes_to_labels,
    flip,
    jitter,
    labels_to_classes,
    to_decoder_frame,
)
from samlab.train.loop import _lr_factor

pytestmark = [
    pytest.mark.filterwarnings("ignore:Importing from timm:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:training on cached embeddings:UserWarning"),
]

STRUCTURES = {"bone": (2,), "rectum": (6,)}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def phantom_slices() -> list[SliceRecord]:
    case = make_phantom_case(3, shape=(8, 48, 48))
    return slices_from_volume(case.case_id, case.image, case.labels, case.spacing)


@pytest.fixture(scope="module")
def shared_cache() -> EmbeddingCache:
    return EmbeddingCache(max_items_in_memory=64)


def fresh_model(method: str = "lora", scope: str = "decoder"):
    """Random-init LiteMedSAM adapted with PEFT; the seed makes every call build the same model."""
    torch.manual_seed(0)
    loaded = load_model("litemedsam", allow_random_init=True)
    apply_peft(loaded.module, method, scope)
    return loaded


def quick_recipe(**overrides):
    return get_recipe("litemedsam_refine", **{"max_epochs": 2, "batch_size": 2, **overrides})


# ------------------------------------------------------------------------------------------ recipes
def test_recipes_carry_the_papers_numbers():
    ft = RECIPES["finetune_sam"]
    assert (ft.loss, ft.optimizer, ft.lr, ft.weight_decay, ft.warmup_iters, ft.batch_size) == \
        ("dice_ce", "adamw", 1e-4, 0.1, 200, 4)
    assert (ft.max_epochs, ft.patience, ft.select_on, ft.hist_eq_p) == (200, 20, "val_dice", 0.1)
    assert ft.jitter_brightness == ft.jitter_contrast == 0.3
    lm = RECIPES["litemedsam_refine"]
    assert (lm.loss, lm.optimizer, lm.lr, lm.betas, lm.weight_decay, lm.batch_size) == \
        ("dice_bce_iou", "adam", 5e-5, (0.9, 0.999), 0.01, 4)
    assert lm.flips and lm.box_shift_px == 5 and lm.train_iou_head and lm.select_on == "val_loss"


def test_recipe_overrides_are_validated():
    assert get_recipe("finetune_sam", max_epochs=3).max_epochs == 3
    with pytest.raises(ValueError, match="lr"):
        get_recipe("finetune_sam", lr=0)
    with pytest.raises(ValueError, match="learning_rate"):
        get_recipe("finetune_sam", learning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown training recipe"):
        get_recipe("sam_paper")


def test_warmup_is_linear_then_poly_decay():
    f = _lr_factor(warmup=200, decay="poly", total_steps=1000)
    assert f(0) == pytest.approx(1 / 200) and f(99) == pytest.approx(0.5) and f(199) == pytest.approx(1.0)
    assert f(200) == pytest.approx(1.0)
    assert f(700) == pytest.approx(0.5 ** 0.9)  # (1 - 500/1000) ** 0.9
    assert _lr_factor(0, "constant", 10)(5) == 1.0


# ------------------------------------------------------------------------------------------ losses
def test_binary_losses_match_the_pelvic_papers_equations():
    # g = [1, 1, 0, 0], logits 0 -> s = 0.5 everywhere: sum gs = 1, sum g^2 = 2, sum s^2 = 1
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    logits = torch.zeros(1, 1, 2, 2)
    total, parts = segmentation_loss("dice_bce_iou", logits, target, torch.tensor([[0.3]]), train_iou_head=True)
    assert parts["dice"] == pytest.approx(1 - 2 / 3, abs=1e-4)  # 1 - 2*1 / (2 + 1)
    assert parts["iou"] == pytest.approx(1 - 1 / 2, abs=1e-4)  # 1 - 1 / (2 + 1 - 1)
    assert parts["bce"] == pytest.approx(math.log(2), abs=1e-6)
    assert parts["iou_head"] == pytest.approx(0.09, abs=1e-6)  # nothing predicted (logit 0 is not > 0): IoU 0
    assert float(total) == pytest.approx(1 / 3 + 0.5 + math.log(2) + 0.09, abs=1e-4)
    _, parts = segmentation_loss("dice_ce", logits, target)
    assert set(parts) == {"dice", "bce"}


def test_multiclass_loss_is_softmax_dice_plus_ce():
    logits = torch.zeros(2, 3, 4, 4)  # uniform over 3 classes
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    _, parts = segmentation_loss("dice_ce", logits, target)
    assert parts["ce"] == pytest.approx(math.log(3), abs=1e-6)
    # background channel: s = 1/3 on 16 px, g = 1: 1 - 2*(16/3)/(16 + 16/9); other channels: g = 0 -> 1 - 0
    background = 1 - 2 * (16 / 3) / (16 + 16 / 9)
    assert parts["dice"] == pytest.approx((background + 1 + 1) / 3, abs=1e-4)
    with pytest.raises(ValueError, match="binary loss needs"):
        segmentation_loss("dice_ce", logits, torch.zeros(2, 1, 4, 4))


# ------------------------------------------------------------------------------------------ data
def test_boxes_and_targets_map_into_the_model_frame():
    from samlab.models import get_spec

    geometry = _geometry(get_spec("litemedsam"), 96, 96)  # 96 -> 256: scale 8/3
    mask = np.zeros((96, 96), bool)
    mask[20:41, 10:31] = True  # box (10, 20, 30, 40)
    scale = 256 / 96
    np.testing.assert_allclose(box_in_input_frame(mask, geometry), np.array([10, 20, 30, 40]) * scale, rtol=1e-6)
    shifted = box_in_input_frame(mask, geometry, torch.tensor([1, 2, 3, 4]))
    np.testing.assert_allclose(shifted, np.array([10, 20, 30, 40]) * scale + np.array([-1, -2, 3, 4]), rtol=1e-6)
    edge = np.zeros((96, 96), bool)
    edge[0:5, 90:96] = True
    # box (90, 0, 95, 4) -> (240, 0, 253.3, 10.7); grown by 5 px and clipped to the 256 px content
    np.testing.assert_allclose(box_in_input_frame(edge, geometry, torch.tensor([5, 5, 5, 5])),
                               [240 - 5, 0, 255, 4 * scale + 5], rtol=1e-6)
    target = to_decoder_frame(mask, geometry, 256)
    assert target.shape == (1, 256, 256)
    assert float(target.sum()) == pytest.approx(21 * 21 * scale**2, rel=0.1)
    assert target[0, int(30 * scale), int(20 * scale)] == 1 and target[0, 5, 5] == 0


def test_sam_frame_pads_bottom_right():
    from samlab.models import get_spec

    geometry = _geometry(get_spec("sam_vit_b"), 50, 100)  # longest side 100 -> 1024; content 512 x 1024
    mask = np.ones((50, 100), bool)
    target = to_decoder_frame(mask, geometry, 256)
    assert target[0, :128].all() and not target[0, 128:].any()


def test_items_classes_and_flips():
    labels = np.zeros((6, 6), np.int64)
    labels[0, 0] = 2
    labels[3:5, 3:5] = 6
    slices = [SliceRecord("c", 0, np.random.rand(6, 6).astype(np.float32), labels, (1.0, 1.0)),
              SliceRecord("c", 1, np.zeros((6, 6), np.float32), np.zeros((6, 6), np.int64), (1.0, 1.0))]
    items = make_items(slices, STRUCTURES, "box")
    assert [(i.slice_index, i.structure) for i in items] == [(0, "bone"), (0, "rectum")]
    assert [i.structure for i in make_items(slices, STRUCTURES, "box", min_object_px=2)] == ["rectum"]
    assert len(make_items(slices, STRUCTURES, "automatic")) == 1
    classes = labels_to_classes(labels, (2, 6))
    assert classes[0, 0] == 1 and classes[3, 3] == 2 and classes[1, 1] == 0
    np.testing.assert_array_equal(classes_to_labels(classes, (2, 6)), labels)
    assert flip(labels, 1)[0, 5] == 2 and flip(labels, 2)[5, 0] == 2 and flip(labels, 3)[5, 5] == 2
    with pytest.raises(ValueError, match="shape"):
        SliceRecord("c", 0, np.zeros((4, 4)), np.zeros((5, 5), np.int64), (1.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        SliceRecord("c", 0, np.full((4, 4), np.nan), np.zeros((4, 4), np.int64), (1.0, 1.0))


def test_jitter_changes_content_not_padding():
    from samlab.models import get_spec, prepare_image

    spec = get_spec("litemedsam")
    image = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (50, 1))  # 50 x 100 -> content 128 x 256
    tensor, geometry = prepare_image(spec, image)
    out = jitter(tensor, spec, geometry, brightness=0.5, contrast=1.0)
    torch.testing.assert_close(out[..., :128, :], tensor[..., :128, :] * 0.5)
    assert torch.equal(out[..., 128:, :], tensor[..., 128:, :])


# ------------------------------------------------------------------------------------------ modes
def test_frozen_batchnorm_stays_in_eval_mode():
    loaded = fresh_model("lora", "encoder_decoder")
    set_train_mode(loaded.module)
    bns = [m for m in loaded.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert loaded.module.mask_decoder.training and not loaded.module.prompt_encoder.training
    vanilla = fresh_model("vanilla", "encoder_decoder")
    set_train_mode(vanilla.module)
    assert all(m.training for m in vanilla.module.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ------------------------------------------------------------------------------------------ training
def _train(phantom_slices, cache, out_dir=None, recipe=None, **kwargs):
    return train(fresh_model(), phantom_slices[3:5], phantom_slices[5:6], STRUCTURES, recipe or quick_recipe(),
                 cache=cache, out_dir=out_dir, progress=False, **kwargs)


class _Killed(Exception):
    pass


def test_resume_after_a_kill_equals_an_uninterrupted_run(phantom_slices, shared_cache, tmp_path):
    straight = _train(phantom_slices, shared_cache, tmp_path / "straight")
    straight_state = trainable_state_of(tmp_path / "straight")

    def kill_after_first_epoch(row):
        if row["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        _train(phantom_slices, shared_cache, tmp_path / "killed", on_epoch_end=kill_after_first_epoch)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    resumed = _train(phantom_slices, shared_cache, tmp_path / "killed")
    assert resumed.resumed_from_epoch == 1 and len(resumed.epoch_seconds) == 1
    assert resumed.encoder_passes == 0, "the embeddings of the first run must be found in the shared cache"
    assert resumed.history == straight.history
    assert [row["epoch"] for row in straight.history] == [0, 1, 2]
    resumed_state = trainable_state_of(tmp_path / "killed")
    assert straight_state.keys() == resumed_state.keys()
    assert all(torch.equal(straight_state[k], resumed_state[k]) for k in straight_state)
    # training moved the weights: the resumed equality is not the trivial "nothing happened"
    first = load_checkpoint(tmp_path / "straight" / "best.pt")
    assert first["epoch"] == straight.best_epoch
    # a finished run resumes to "nothing to do" and returns the same best model
    again = _train(phantom_slices, shared_cache, tmp_path / "straight")
    assert again.history == straight.history and again.epoch_seconds == []


def trainable_state_of(out_dir):
    return load_checkpoint(out_dir / "last.pt")["model"]


def test_checkpoint_is_weights_only_and_complete(phantom_slices, shared_cache, tmp_path):
    result = _train(phantom_slices, shared_cache, tmp_path / "ck", recipe=quick_recipe(max_epochs=1))
    payload = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history", "meta"} <= set(payload)
    assert payload["epoch"] == 1 and payload["finished"] and len(payload["history"]) == 2
    model = fresh_model()
    trainable = {n for n, p in model.module.named_parameters() if p.requires_grad}
    assert trainable <= set(payload["model"])
    frozen = {n for n, p in model.module.named_parameters() if not p.requires_grad}
    assert not (frozen & set(payload["model"])), "frozen weights belong to the base checkpoint, not here"
    assert result.n_train_items == 4 and result.n_val_items == 2  # bone + rectum on z = 3, 4; val z = 5


def test_resume_refuses_a_different_run(phantom_slices, shared_cache, tmp_path):
    _train(phantom_slices, shared_cache, tmp_path / "ck", recipe=quick_recipe(max_epochs=1))
    with pytest.raises(TrainCheckpointError, match="recipe"):
        _train(phantom_slices, shared_cache, tmp_path / "ck", recipe=quick_recipe(max_epochs=1, lr=1e-3))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainCheckpointError, match="corrupt"):
        _train(phantom_slices, shared_cache, tmp_path / "bad")


def test_early_stopping_keeps_the_best_model(phantom_slices, shared_cache):
    # a learning rate too small to change a float32 weight: no epoch beats epoch 0
    recipe = quick_recipe(max_epochs=5, patience=1, lr=1e-30, select_on="val_dice", flips=False)
    loaded = fresh_model()
    before = trainable_state(loaded.module)
    result = train(loaded, phantom_slices[3:5], phantom_slices[5:6], STRUCTURES, recipe, cache=shared_cache,
                   progress=False)
    assert result.stopped_early and result.best_epoch == 0
    assert [row["epoch"] for row in result.history] == [0, 1]
    after = trainable_state(loaded.module)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not loaded.module.training


def test_gradient_accumulation_equals_a_larger_batch(phantom_slices, shared_cache):
    """Batch 4 vs 2 micro-batches of 2 accumulated: one optimiser step on the same 4 items, the same update.

    (Adam's update hardly depends on the gradient's scale, so this checks that the micro-batches are
    combined into one step over the same items; the tolerance allows for sign flips of near-zero
    gradients, whose Adam update is a fraction of the 5e-5 learning rate.)
    """
    states, results = [], []
    for batch, accumulate in ((4, 1), (2, 2)):
        loaded = fresh_model()
        results.append(train(loaded, phantom_slices[3:5], phantom_slices[5:6], STRUCTURES,
                             quick_recipe(max_epochs=1, batch_size=batch, accumulate=accumulate, weight_decay=0.0),
                             cache=shared_cache, progress=False))
        states.append(trainable_state(loaded.module))
    assert [r.history[-1]["steps"] for r in results] == [1, 1]
    before = trainable_state(fresh_model().module)
    changed = [k for k in before if not torch.equal(before[k], states[0][k])]
    assert changed, "one optimiser step must change the weights"
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=2e-5)


def test_cache_refuses_a_trainable_encoder_and_automatic_mode_needs_a_resized_decoder(phantom_slices):
    with pytest.raises(ValueError, match="frozen image encoder"):
        train(fresh_model("lora", "encoder_decoder"), phantom_slices[2:3], phantom_slices[5:6], STRUCTURES,
              quick_recipe(), use_cache=True, progress=False)
    three = {**STRUCTURES, "bladder": (1,)}  # 4 classes; LiteMedSAM's decoder has 3 outputs
    with pytest.raises(ValueError, match="resize_mask_decoder_outputs"):
        train(fresh_model(), phantom_slices[3:5], phantom_slices[5:6], three, quick_recipe(), mode="automatic",
              progress=False)


def test_encoder_training_on_pixels_in_automatic_mode(phantom_slices, tmp_path):
    """Encoder + decoder LoRA, prompt-free, with every pixel augmentation; frozen BatchNorm statistics unchanged."""
    from samlab.train.configs import GridConfig, build_model

    structures = {**STRUCTURES, "bladder": (1,)}  # 4 classes: the decoder is resized from 3 outputs
    with pytest.raises(ValueError, match="disagrees with configuration"):  # the decoder must match the name
        build_model(GridConfig("litemedsam", "encoder_decoder", "lora"), "automatic", structures, allow_random_init=True)
    loaded = build_model(GridConfig("litemedsam", "encoder_decoder", "lora", mode="automatic"), structures=structures,
                         allow_random_init=True)
    assert loaded.module.mask_decoder.num_multimask_outputs == 4
    bn = next(m for m in loaded.module.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    mean_before = bn.running_mean.clone()
    recipe = get_recipe("finetune_sam", max_epochs=1, batch_size=2, warmup_iters=2, flips=True, hist_eq_p=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "augmentation dropped" warning without the cache
        result = train(loaded, phantom_slices[3:5], phantom_slices[5:6], structures, recipe, mode="automatic",
                       out_dir=tmp_path, progress=False)
    assert result.augmentations[:3] == ["flips", "hist_eq(p=1.0)", "jitter(brightness=0.3, contrast=0.3)"]
    assert result.encoder_passes == 0 and result.n_train_items == 2
    assert torch.equal(bn.running_mean, mean_before)
    last = load_checkpoint(tmp_path / "last.pt")["model"]  # the epoch-1 weights (the best may be epoch 0)
    encoder_lora_b = [v for k, v in last.items() if k.startswith("image_encoder") and "lora_B" in k]
    assert encoder_lora_b and any(v.abs().max() > 0 for v in encoder_lora_b), "encoder LoRA (B starts at 0) idle"
    assert 0.0 <= result.history[-1]["val_dice"] <= 1.0


# ------------------------------------------------------------------------------------------ grid helpers
def test_grid_and_slice_sampling():
    from samlab.train import make_grid, sample_slices

    grid = make_grid(["litemedsam"], ["decoder"], ["vanilla", "lora"])
    assert [g.name for g in grid] == ["litemedsam-decoder-vanilla", "litemedsam-decoder-lora"]
    assert grid[1].paper_name == "vit_t-decoder-lora"
    with pytest.raises(ValueError, match="scope"):
        make_grid(["litemedsam"], ["encoder"], ["lora"])
    case = make_phantom_case(1, shape=(10, 32, 32))
    every = sample_slices([case], {"bladder": (1,)})
    assert [s.z for s in every] == [z for z in range(10) if (case.labels[z] == 1).any()]
    few = sample_slices([case], {"bladder": (1,)}, max_slices=2, seed=3)
    again = sample_slices([case], {"bladder": (1,)}, max_slices=2, seed=3)
    assert len(few) == 2 and [s.z for s in few] == [s.z for s in again]
    assert few[0].z < few[1].z and {s.z for s in few} <= {s.z for s in every}


def test_choose_on_validation_follows_each_runs_criterion_per_backbone():
    from samlab import finetune
    from samlab.train import configs

    def run(select_on, score):
        return TrainResult(history=[], best_epoch=1, best_score=score, select_on=select_on, stopped_early=False,
                           augmentations=[], n_train_items=0, n_val_items=0, encoder_passes=0, checkpoint_dir=None,
                           resumed_from_epoch=None)

    grid = configs.make_grid(["litemedsam", "sam_vit_b"], ["decoder"], ["vanilla", "lora", "adapter"])
    runs = {  # the loss criterion keeps the *lowest* loss, the Dice criterion the highest Dice; ties: grid order
        "litemedsam-decoder-vanilla": run("val_loss", 0.30), "litemedsam-decoder-lora": run("val_loss", 0.20),
        "litemedsam-decoder-adapter": run("val_loss", 0.25),
        "sam_vit_b-decoder-vanilla": run("val_dice", 0.70), "sam_vit_b-decoder-lora": run("val_dice", 0.80),
        "sam_vit_b-decoder-adapter": run("val_dice", 0.80),
    }
    chosen = finetune.choose_on_validation(grid, runs)
    assert {m: c.name for m, c in chosen.items()} == {("litemedsam", "box"): "litemedsam-decoder-lora",
                                                      ("sam_vit_b", "box"): "sam_vit_b-decoder-lora"}
    assert list(chosen) == [("litemedsam", "box"), ("sam_vit_b", "box")] and chosen["litemedsam", "box"] in grid
    # modes are chosen apart: the better automatic run never replaces the box-mode choice, nor the reverse
    both = configs.make_grid(["litemedsam"], ["decoder"], ["vanilla", "lora"], modes=["automatic", "box"])
    assert [c.name for c in both] == ["litemedsam-decoder-vanilla-automatic", "litemedsam-decoder-lora-automatic",
                                      "litemedsam-decoder-vanilla", "litemedsam-decoder-lora"]
    runs = {"litemedsam-decoder-vanilla-automatic": run("val_dice", 0.9), "litemedsam-decoder-lora-automatic":
            run("val_dice", 0.5), "litemedsam-decoder-vanilla": run("val_dice", 0.1),
            "litemedsam-decoder-lora": run("val_dice", 0.2)}
    chosen = finetune.choose_on_validation(both, runs)
    assert {k: c.name for k, c in chosen.items()} == {("litemedsam", "automatic"): "litemedsam-decoder-vanilla-automatic",
                                                      ("litemedsam", "box"): "litemedsam-decoder-lora"}
    # the notebook API re-exports the engine's definitions (one class, so isinstance and equality hold)
    assert finetune.GridConfig is configs.GridConfig and finetune.build_model is configs.build_model


def test_evaluate_writes_2d_and_3d_rows(shared_cache):
    from dataclasses import replace

    from samlab.finetune import evaluate

    full = make_phantom_case(3, shape=(8, 48, 48))  # slices 3-5 are the training fixture's: cached embeddings
    case = replace(full, image=full.image[3:6], labels=full.labels[3:6])
    structures = {"rectum": (6,), "bone": (2,), "bladder": (1,)}
    loaded = fresh_model()
    frame, predictions = evaluate(loaded, [case], structures, "box", context={"method": "finetune",
                                  "backbone": "litemedsam", "prompt": "box"}, cache=shared_cache, progress=False)
    for name, values in structures.items():
        present = int(np.isin(case.labels, values).any(axis=(1, 2)).sum())
        rows = frame[frame["structure"] == name]
        assert len(rows[rows["slice"] >= 0]) == 2 * present  # dice + nsd per slice with the structure
        assert sorted(rows[rows["slice"] == -1]["metric"]) == ["dice", "hd95", "nsd"]
        empty = ~np.isin(case.labels, values).any(axis=(1, 2))
        assert not predictions[(case.case_id, name)][empty].any(), "slices without a box must stay empty"
    assert set(frame["method"]) == {"finetune"} and frame["value"].between(0, 1e3).all()


def test_compare_structures_pairs_subjects():
    from samlab.finetune import compare_structures
    from samlab.results import to_frame

    def rows(method, peft, values):
        return [{"dataset": "d", "subject": s, "structure": st, "method": method, "backbone": "litemedsam",
                 "scope": "decoder" if peft else "", "peft": peft, "prompt": "box", "metric": "dice", "value": v}
                for (s, st), v in values.items()]

    ft = to_frame(rows("finetune", "lora", {("a", "bone"): 0.8, ("b", "bone"): 0.6, ("c", "bone"): 0.1}))
    zs = to_frame(rows("zero_shot", "", {("a", "bone"): 0.4, ("b", "bone"): 0.2}))
    table = compare_structures(ft, zs, "zero-shot", shape_class={"bone": "bilateral"})
    assert table.loc["bone", "zero-shot"] == pytest.approx(0.3)
    assert table.loc["bone", "litemedsam-decoder-lora"] == pytest.approx(0.7)  # subject c has no partner
    assert table.loc["bone", "gain (litemedsam-decoder-lora)"] == pytest.approx(0.4)
    assert table.loc["bone", "shape"] == "bilateral" and table.attrs["subjects"] == ["a", "b"]
    with pytest.raises(ValueError, match="no test subject"):
        compare_structures(ft, to_frame(rows("zero_shot", "", {("z", "bone"): 0.1})), "zero-shot")


def test_notebook_parameters_build_the_recipe():
    from samlab.config import FinetuneParams, ProfileError
    from samlab.profiles import validate_notebook_parameters

    params = FinetuneParams(max_epochs=2, recipe_overrides={"lr": 1e-4})
    recipe = params.training_recipe()
    assert (recipe.name, recipe.max_epochs, recipe.lr) == ("litemedsam_refine", 2, 1e-4)
    with pytest.raises(ProfileError, match="lrr"):
        validate_notebook_parameters("04_finetuning_grid", {"recipe_overrides": {"lrr": 1}})


def test_automatic_mode_gets_its_own_recipe_fields_and_says_so():
    """Automatic mode's fresh class tokens need a higher learning rate than box refinement: its overrides apply
    to automatic configurations only, and the results' recipe label names what differs from the named recipe."""
    from samlab.config import FewShotParams, FinetuneParams, ProfileError
    from samlab.profiles import validate_notebook_parameters

    params = FinetuneParams(max_epochs=3)
    box, auto = params.training_recipe("box"), params.training_recipe("automatic")
    assert (box.lr, box.batch_size, box.max_epochs) == (5e-5, 4, 3)
    assert (auto.lr, auto.batch_size, auto.max_epochs) == (1e-3, 1, 3)
    assert box.label == "litemedsam_refine, 3 epochs"
    assert auto.label == "litemedsam_refine, 3 epochs, lr 0.001, batch 1"
    longer = FinetuneParams(max_epochs=3, automatic_overrides={"max_epochs": 8}).training_recipe("automatic")
    assert (longer.lr, longer.max_epochs) == (5e-5, 8)  # an explicit dict replaces the defaults
    assert FinetuneParams(automatic_overrides={}).training_recipe("automatic") == FinetuneParams().training_recipe()
    few = FewShotParams(max_epochs=5, batch_size=2)
    assert few.training_recipe("box").label == "finetune_sam, 5 epochs, batch 2"
    assert (few.training_recipe("automatic").lr, few.training_recipe("automatic").patience) == (1e-3, None)
    with pytest.raises(ProfileError, match="lrr"):
        validate_notebook_parameters("04_finetuning_grid", {"automatic_overrides": {"lrr": 1}})
    with pytest.raises(ProfileError, match="batch_size"):
        validate_notebook_parameters("05_few_shot", {"automatic_overrides": {"batch_size": 0}})


def test_a_resumed_run_says_so_and_reuses_the_on_disk_embedding_cache(phantom_slices, tmp_path, capsys):
    """Train epoch 1 of 2, stop; a new process (new cache object, same folder) resumes to 2 and says so."""
    out = tmp_path / "ckpt"

    def stop_after_first_epoch(row):
        if row["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        _train(phantom_slices, EmbeddingCache(tmp_path / "embeddings"), out, on_epoch_end=stop_after_first_epoch)
    first = capsys.readouterr().out
    assert "resuming" not in first, "a fresh run must not claim to resume"
    resumed = _train(phantom_slices, EmbeddingCache(tmp_path / "embeddings"), out)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resuming")]
    assert lines == [f"resuming training from epoch 1 (checkpoint {out / 'last.pt'}): continuing at epoch 2 of 2; "
                     "embedding cache reused (0 encoder passes)"]
    assert resumed.resumed_from_epoch == 1 and resumed.encoder_passes == 0
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]
    # without the folder the embeddings are computed again, and the message says so
    again = _train(phantom_slices, EmbeddingCache(tmp_path / "other"), out)
    message = capsys.readouterr().out.strip()
    assert again.encoder_passes == 3
    assert message.endswith("already finished, nothing to train; embedding cache: 3 slice(s) encoded anew, the rest reused")
