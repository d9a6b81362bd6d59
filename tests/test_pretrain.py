"""Phase-1 pre-training and named starting weights, on LiteMedSAM's real weights and phantom slices.

* MAE (SimMIM-style masking) for a few steps lowers the reconstruction loss (first vs last steps,
  fixed seed), and the masked patches really are hidden from the encoder;
* the saved encoder (an SSLSAM checkpoint) loads into grid configurations (decoder LoRA, encoder
  Adapter) with every key matching, and changes exactly the encoder;
* init names resolve; unknown names, missing checkpoints and pickled or corrupt files fail with
  messages naming the problem;
* SupSAM: several structure sets merge into one label space, and a short supervised phase 1 writes a
  checkpoint that loads.
"""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from samlab.data.phantom import make_phantom_case
from samlab.models import CheckpointError
from samlab.models.inits import (
    InitError,
    load_with_init,
    parse_init,
    read_init_checkpoint,
    save_init_checkpoint,
)
from samlab.pretrain.data import is_blank, read_image_folder, slices_from_cases, subsample
from samlab.pretrain.mae import MAE_CHECKPOINT, MAERecipe, pretrain_mae, random_masks, reconstruct, save_sslsam
from samlab.train.checkpoint import TrainCheckpointError
from samlab.train import GridConfig, build_model, slices_from_volume


@pytest.fixture(scope="module")
def unlabelled():
    cases = [make_phantom_case(i, shape=(6, 64, 64)) for i in range(2)]
    return [s.image for s in slices_from_cases(cases)]


MAE_RECIPE = MAERecipe(steps=6, batch_size=1, lr=5e-4, warmup_fraction=0.3)


@pytest.fixture(scope="module")
def mae_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mae_run")


@pytest.fixture(scope="module")
def mae_run(unlabelled, mae_dir):
    """6 MAE steps (batch 1) from LiteMedSAM's shipped weights, seed 0 (6.7 s a step on the 2-core CPU).

    Checkpoints every 3 steps; the one after step 3 is kept as ``step3.pt`` for the resume test."""
    torch.manual_seed(0)
    loaded = load_with_init("litemedsam", "litemedsam")

    def keep_step3(row):
        if row["step"] == 3:
            shutil.copy(mae_dir / MAE_CHECKPOINT, mae_dir / "step3.pt")

    return loaded, pretrain_mae(loaded, unlabelled, MAE_RECIPE, seed=0, progress=False, out_dir=mae_dir,
                                checkpoint_every=3, on_step=keep_step3)


@pytest.fixture(scope="module")
def sslsam_file(mae_run, tmp_path_factory):
    loaded, result = mae_run
    return save_sslsam(tmp_path_factory.mktemp("sslsam") / "mae_phantom.pt", loaded, result, {"source": "phantom"})


def test_mae_loss_falls(mae_run):
    _, result = mae_run
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.9 * first, f"reconstruction loss did not fall: first 3 steps {first:.4f}, last 3 {last:.4f}"
    lrs = [r["lr"] for r in result.history]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # warm-up, then cosine decay


def test_mae_resumes_from_a_mid_run_checkpoint_to_the_same_steps(mae_run, mae_dir, unlabelled, tmp_path):
    """A run killed after step 3 and rerun continues from its checkpoint: steps 4-6 equal the uninterrupted run's."""
    _, result = mae_run
    assert result.resumed_from_step is None and (mae_dir / MAE_CHECKPOINT).is_file()
    shutil.copy(mae_dir / "step3.pt", tmp_path / MAE_CHECKPOINT)
    torch.manual_seed(123)  # the global RNG disturbed: the checkpoint's state must win
    fresh = load_with_init("litemedsam", "litemedsam")
    resumed = pretrain_mae(fresh, unlabelled, MAE_RECIPE, seed=0, progress=False, out_dir=tmp_path, checkpoint_every=3)
    assert resumed.resumed_from_step == 3
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in result.history]
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in result.history]
    theirs, ours = result.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs), "resumed encoder differs from the uninterrupted one"
    # A finished run resumes to itself without a step; another recipe is refused with the field named.
    again = pretrain_mae(load_with_init("litemedsam", "litemedsam"), unlabelled, MAE_RECIPE, seed=0, progress=False,
                         out_dir=tmp_path)
    assert again.resumed_from_step == 6 and len(again.history) == 6
    with pytest.raises(TrainCheckpointError, match=r"mae_last.pt belongs to a different MAE run \(differs in: recipe\)"):
        pretrain_mae(fresh, unlabelled, MAERecipe(steps=6, batch_size=1, lr=1e-3, warmup_fraction=0.3), seed=0,
                     progress=False, out_dir=tmp_path)
    with pytest.raises(TrainCheckpointError, match="differs in: images_sha256, n_images"):
        pretrain_mae(fresh, unlabelled[:2], MAE_RECIPE, seed=0, progress=False, out_dir=tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / MAE_CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainCheckpointError, match="junk/mae_last.pt"):
        pretrain_mae(fresh, unlabelled, MAE_RECIPE, seed=0, progress=False, out_dir=tmp_path / "junk")


def test_masks_have_the_ratio_and_hide_their_patches(mae_run, unlabelled):
    masks = random_masks(3, 16, 0.75, torch.Generator().manual_seed(1))
    assert masks.shape == (3, 16, 16) and (masks.sum(dim=(1, 2)) == 192).all()
    loaded, result = mae_run
    model = result.model
    # Whatever a masked patch holds, the encoder's output is the same: it sees the mask token only.
    image = np.asarray(unlabelled[0], dtype=np.float32)
    mask = masks[:1]
    from samlab.pretrain.mae import prepare_batch

    batch = prepare_batch(loaded, [image])
    noisy = batch.clone()
    full = torch.nn.functional.interpolate(mask[:, None], size=batch.shape[-2:], mode="nearest")
    noisy = noisy * (1 - full) + torch.rand_like(noisy) * full
    with torch.no_grad():
        a, _ = model(batch, mask)
        b, _ = model(noisy, mask)
    assert torch.allclose(a, b, atol=1e-5)
    shown = reconstruct(loaded, model, [image], mask_ratio=0.75, seed=0)
    assert set(shown) == {"masked", "reconstruction", "original", "mask"}
    assert shown["original"].shape == (1, 256, 256) and 0.7 < shown["mask"].mean() < 0.8


@pytest.mark.parametrize("scope,method", [("decoder", "lora"), ("encoder_decoder", "adapter")])
def test_sslsam_checkpoint_loads_into_grid_configurations(sslsam_file, mae_run, scope, method):
    loaded, _ = mae_run
    payload = read_init_checkpoint(sslsam_file)
    assert payload["kind"] == "sslsam" and payload["model"] == "litemedsam" and payload["base_init"] == "litemedsam"
    assert all(k.startswith("image_encoder.") for k in payload["state"])
    assert payload["meta"]["last_loss"] < payload["meta"]["first_loss"]
    built = build_model(GridConfig("litemedsam", scope, method, f"sslsam:{sslsam_file}"), seed=0)
    assert built.init == "sslsam:mae_phantom" and built.weights.startswith("sslsam:")
    base = build_model(GridConfig("litemedsam", scope, method, "litemedsam"), seed=0)
    assert base.init == "litemedsam"
    state, ref = built.module.state_dict(), base.module.state_dict()
    assert state.keys() == ref.keys()
    # The pre-trained encoder's own tensors are in the built model (PEFT may rename wrapped layers).
    enc_keys = [k for k in payload["state"] if k in state]
    assert len(enc_keys) > 0.8 * len(payload["state"])
    for k in enc_keys:
        assert torch.equal(state[k], payload["state"][k]), k
    changed = [k for k in enc_keys if not torch.equal(state[k], ref[k])]
    assert changed, "the SSLSAM encoder is identical to LiteMedSAM's: pre-training changed nothing"
    dec = [k for k in state if k.startswith(("mask_decoder.", "prompt_encoder."))]
    assert all(torch.equal(state[k], ref[k]) for k in dec)  # decoder and prompt encoder: LiteMedSAM's


def test_init_names_resolve_and_fail_clearly(tmp_path):
    assert parse_init("litemedsam").label == "litemedsam"
    assert parse_init("sslsam:/x/enc.pt").label == "sslsam:enc"
    with pytest.raises(InitError, match="unknown init 'mae'"):
        parse_init("mae")
    with pytest.raises(InitError, match="needs a checkpoint path"):
        parse_init("supsam:")
    with pytest.raises(InitError, match="does not fit model litemedsam"):
        load_with_init("litemedsam", "sam")
    with pytest.raises(CheckpointError, match=r"SAM ViT-B.*checkpoints: \{sam_vit_b"):
        load_with_init("sam_vit_b", "sam")
    with pytest.raises(CheckpointError, match=r"MedSAM ViT-B.*checkpoints: \{medsam_vit_b"):
        load_with_init("sam_vit_b", "medsam")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_with_init("sam_vit_b", "sam", {"sam_vit_b": str(tmp_path / "absent.pth")})
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_with_init("litemedsam", f"sslsam:{tmp_path / 'absent.pt'}")
    with pytest.raises(InitError, match="allow_random_init"):
        load_with_init("litemedsam", "random")
    assert load_with_init("litemedsam", "random", allow_random_init=True).init == "random"
    from samlab.config import FinetuneParams

    with pytest.raises(ValueError, match="unknown init"):
        FinetuneParams(inits=["litemedsam", "imagenet"])


def test_pickled_corrupt_and_foreign_checkpoints_are_refused(tmp_path, sslsam_file):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "samlab-init-v1", "state": {"x": torch.zeros(1)}, "evil": Evil()}, pickled)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_with_init("litemedsam", f"sslsam:{pickled}")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(sslsam_file.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_with_init("litemedsam", f"sslsam:{corrupt}")
    plain = tmp_path / "plain.pt"
    torch.save({"image_encoder.x": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a samlab phase-1 checkpoint"):
        read_init_checkpoint(plain)
    with pytest.raises(InitError, match="holds sslsam weights"):
        load_with_init("litemedsam", f"supsam:{sslsam_file}")
    wrong = tmp_path / "wrong.pt"
    save_init_checkpoint(wrong, "sslsam", "litemedsam", "litemedsam",
                         {"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(2, 2, 1, 1)}, {})
    with pytest.raises(CheckpointError, match=r"wrong.pt: does not fit model litemedsam.*1 of another shape"):
        load_with_init("litemedsam", f"sslsam:{wrong}")
    assert pickle  # the module is used by torch.save above through __reduce__


def test_unlabelled_slices_and_folders(tmp_path):
    case = make_phantom_case(0, shape=(6, 48, 48))
    blank = np.zeros((48, 48), dtype=np.float32)
    assert is_blank(blank) and not is_blank(case.image[3])
    sl = slices_from_cases([case])
    assert 0 < len(sl) <= 6 and all(s.source == case.case_id for s in sl)
    assert len(subsample(sl, 2, seed=0)) == 2
    from PIL import Image

    Image.fromarray((case.image[3] / case.image[3].max() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "vol.npy", case.image)
    np.save(tmp_path / "empty.npy", np.zeros((2, 8, 8), dtype=np.float32))
    found = read_image_folder(tmp_path)
    assert {s.source for s in found} == {"a.png", "vol.npy"}
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png: cannot read"):
        read_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_image_folder(tmp_path / "nowhere")


@pytest.mark.slow  # trains the encoder on pixels for one epoch
def test_supsam_merges_sets_and_saves_a_loadable_checkpoint(tmp_path):
    from samlab.pretrain.supsam import LabelledSet, merge_label_sets, pretrain_supervised, save_supsam, supsam_recipe

    a, b = make_phantom_case(1, shape=(6, 48, 48)), make_phantom_case(2, shape=(6, 48, 48))
    sa = slices_from_volume(a.case_id, a.image, a.labels, a.spacing)
    sb = slices_from_volume(b.case_id, b.image, b.labels, b.spacing)
    sets = [LabelledSet("bones", sa[2:3], sa[3:4], {"bone": (2,)}),
            LabelledSet("gut", sb[2:3], sb[3:4], {"rectum": (6,), "bone": (2,)})]
    train_s, val_s, structures = merge_label_sets(sets)
    assert structures == {"bones/bone": (2,), "gut/rectum": (8,), "gut/bone": (4,)}
    assert set(np.unique(train_s[0].labels)) <= {0, 2}
    for original, merged in zip(sb[2:3], train_s[1:]):
        assert np.array_equal(merged.labels == 8, np.asarray(original.labels) == 6)
    loaded = load_with_init("litemedsam", "litemedsam")
    recipe = supsam_recipe(max_epochs=1, warmup_iters=0, batch_size=2)
    loaded, result, merged = pretrain_supervised(loaded, sets, recipe, progress=False)
    assert result.history[0]["epoch"] == 0 and recipe.patience == 5
    assert not any(p.requires_grad for p in loaded.module.prompt_encoder.parameters())
    path = save_supsam(tmp_path / "supsam.pt", loaded, result, merged)
    built = build_model(GridConfig("litemedsam", "decoder", "vanilla", f"supsam:{path}"), seed=0)
    assert built.init == "supsam:supsam"
    payload = read_init_checkpoint(path)
    assert result.mode == "mixed" and payload["meta"]["prompt_mode"] == "mixed", "the paper's box-or-point prompts"
    state = built.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in payload["state"].items())


def test_grid_names_and_init_comparison_read_the_init_column():
    import pandas as pd

    from samlab.finetune import checkpoint_dir, compare_inits, config_label
    from samlab.train import make_grid

    grid = make_grid(["litemedsam"], ["decoder"], ["lora"], ["litemedsam", "sslsam:/runs/x/enc.pt"])
    assert [c.name for c in grid] == ["litemedsam-decoder-lora@litemedsam", "litemedsam-decoder-lora@sslsam:enc"]
    assert make_grid(["litemedsam"], ["decoder"], ["lora"])[0].name == "litemedsam-decoder-lora"  # old names kept
    assert ":" not in checkpoint_dir("/tmp", grid[1], {}).name
    with pytest.raises(InitError, match="unknown init"):
        make_grid(["litemedsam"], ["decoder"], ["lora"], ["imagenet"])
    rows = []
    for init, shift in (("litemedsam", 0.0), ("sslsam:enc", 0.1)):
        for subject, value in (("a", 0.5), ("b", 0.7), ("c", 0.6)):
            rows.append({"dataset": "P", "subject": subject, "slice": -1, "structure": "s", "backbone": "litemedsam",
                         "scope": "decoder", "peft": "lora", "init": init, "mode": "box", "metric": "dice",
                         "value": value + shift})
    rows.append({**rows[0], "subject": "d", "init": "litemedsam"})  # unpaired: left out of the comparison
    frame = pd.DataFrame(rows)
    assert set(config_label(frame)) == {c.name for c in grid}
    table = compare_inits(frame)
    row = table.loc["litemedsam-decoder-lora"]
    assert table.attrs["base"] == "litemedsam" and row["n"] == 3
    assert row["sslsam:enc - litemedsam"] == pytest.approx(0.1)
    legacy = frame.assign(init="pretrained")
    assert set(config_label(legacy)) == {"litemedsam-decoder-lora"}


def test_init_comparison_title_reads_data_mode_and_n_from_the_rows():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from samlab.finetune import plot_init_comparison

    rows = [{"dataset": "PelvisPhantom", "subject": "a", "slice": -1, "structure": "s", "backbone": "litemedsam",
             "scope": "decoder", "peft": "vanilla", "init": init, "mode": "box", "metric": "dice", "value": v}
            for init, v in (("litemedsam", 0.5), ("sslsam:enc", 0.6))]
    fig = plot_init_comparison(pd.DataFrame(rows))
    title = fig.axes[0].get_title()
    plt.close(fig)
    assert "n = 1 test volume" in title and "volumes" not in title
    assert "PelvisPhantom" in title and "box prompts" in title


def test_init_comparison_keeps_training_modes_apart():
    """A box-prompted and a prompt-free model of one configuration are two rows, never averaged together."""
    import pandas as pd

    from samlab.finetune import compare_inits

    rows = []
    for mode, base in (("box", 0.8), ("automatic", 0.2)):
        for init, shift in (("litemedsam", 0.0), ("sslsam:enc", 0.05 if mode == "box" else -0.1)):
            for subject in ("a", "b"):
                rows.append({"dataset": "P", "subject": subject, "slice": -1, "structure": "s",
                             "backbone": "litemedsam", "scope": "decoder", "peft": "vanilla", "init": init,
                             "mode": mode, "metric": "dice", "value": base + shift})
    table = compare_inits(pd.DataFrame(rows))
    assert sorted(table.index) == ["litemedsam-decoder-vanilla (automatic)", "litemedsam-decoder-vanilla (box)"]
    assert table.loc["litemedsam-decoder-vanilla (box)", "sslsam:enc - litemedsam"] == pytest.approx(0.05)
    assert table.loc["litemedsam-decoder-vanilla (automatic)", "litemedsam"] == pytest.approx(0.2)
    assert table.loc["litemedsam-decoder-vanilla (automatic)", "sslsam:enc - litemedsam"] == pytest.approx(-0.1)
