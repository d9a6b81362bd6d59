"""The fast encoder path (samlab.models.accelerate) is exact by default, falls back cleanly, and never mixes precisions.

Speed itself is shown by benchmarks/encoder_efficiency.py, not asserted here.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from samlab.models import EmbeddingCache, Predictor, prepare_image
from samlab.models import accelerate
from samlab.models.accelerate import EncoderRunner, compile_pays, configure_threads


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Compile records and inductor caches of a test go to a temporary folder, never ~/.cache."""
    monkeypatch.setenv("SAMLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SAMLAB_COMPILE", raising=False)
    monkeypatch.delenv("SAMLAB_PRECISION", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _tiny_conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 4, 1)).eval()


def _shared(prostate_slices_dir, n: int):
    from PIL import Image

    out = []
    for mask_path in sorted((prostate_slices_dir / "masks").glob("*.png"))[:n]:
        image = np.array(Image.open(next((prostate_slices_dir / "images").rglob(mask_path.name))))
        out.append((image, np.array(Image.open(mask_path)) > 0))
    return out


def test_default_path_matches_the_plain_encoder_on_real_slices(litemedsam, prostate_slices_dir):
    from samlab.prompts import box_from_mask

    plain = copy.deepcopy(litemedsam.module.image_encoder).eval()
    slices = _shared(prostate_slices_dir, 2)
    predictor = Predictor(litemedsam)  # the defaults: auto compile (too few slices to pay), fp32
    embeddings = predictor.embed_many([image for image, _ in slices], batch_size=2)
    assert not predictor.runner.compiled_used
    assert predictor.encoder_calls == 2
    for (image, gt), embedding in zip(slices, embeddings):
        with torch.no_grad():
            reference = plain(prepare_image(litemedsam.spec, image)[0])
        assert embedding.features.shape == reference.shape
        relative = float((embedding.features - reference).abs().max() / reference.abs().max())
        assert relative < 1e-4, relative
        box = [box_from_mask(gt)]
        ours = predictor.decode(embedding, boxes=box).masks()[0]
        with torch.no_grad():
            theirs_embedding = type(embedding)(reference, embedding.geometry)
        theirs = predictor.decode(theirs_embedding, boxes=box).masks()[0]
        assert np.mean(ours == theirs) > 0.999


def test_embeddings_can_enter_autograd_later(litemedsam_random):
    """Decoder training reuses embeddings: they must not be inference tensors."""
    predictor = Predictor(litemedsam_random, compile="off")
    features = predictor.embed(np.random.default_rng(0).random((64, 48)).astype(np.float32)).features
    assert not features.is_inference()
    weight = torch.ones(1, requires_grad=True)
    (features * weight).sum().backward()
    assert weight.grad is not None


def test_embed_many_batches_and_uses_the_cache(litemedsam_random):
    rng = np.random.default_rng(1)
    images = [rng.random((40, 50)).astype(np.float32) for _ in range(3)]
    cache = EmbeddingCache()
    predictor = Predictor(litemedsam_random, cache=cache, compile="off")
    one_by_one = [predictor.embed(image).features for image in images]
    assert predictor.encoder_calls == 3
    again = predictor.embed_many(images, batch_size=2)
    assert predictor.encoder_calls == 3  # all cached
    batched = Predictor(litemedsam_random, compile="off").embed_many(images, batch_size=2)
    for a, b, c in zip(one_by_one, again, batched):
        assert torch.equal(a, b.features)
        torch.testing.assert_close(a, c.features, rtol=1e-4, atol=1e-5)


def test_bf16_embeddings_have_their_own_cache_key(litemedsam_random):
    exact = Predictor(litemedsam_random, compile="off")
    reduced = Predictor(litemedsam_random, compile="off", precision="bf16")
    assert exact.cache_namespace != reduced.cache_namespace
    assert "bf16" not in exact.cache_namespace  # fp32 keeps the key existing caches were written with
    image = np.random.default_rng(2).random((32, 32)).astype(np.float32)
    cache = EmbeddingCache()
    exact.cache = reduced.cache = cache
    exact.embed(image)
    reduced.embed(image)
    assert reduced.encoder_calls == 1 and cache.misses == 2  # the exact entry was not served to bf16


def test_compile_failure_falls_back_to_eager():
    module = _tiny_conv()
    calls = []

    def broken(_module):
        calls.append(1)
        raise RuntimeError("no C++ compiler found")

    runner = EncoderRunner(module, torch.device("cpu"), "tiny", compile="on", compiler=broken)
    batch = torch.rand(2, 3, 16, 16)
    with pytest.warns(RuntimeWarning, match="compile of the tiny encoder failed.*no C\\+\\+ compiler"):
        out = runner(batch)
    with torch.no_grad():
        torch.testing.assert_close(out, module(batch))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runner(batch)  # no second attempt, no second warning
    assert calls == [1] and not runner.compiled_used


def test_auto_compiles_only_when_it_pays(monkeypatch):
    compiled = []

    def fake_compiler(module):
        compiled.append(module)
        return module

    runner = EncoderRunner(_tiny_conv(), torch.device("cpu"), "tiny", compile="auto", compiler=fake_compiler)
    batch = torch.rand(1, 3, 8, 8)
    runner(batch, items_left=100)  # first batch: measured eagerly
    runner(batch, items_left=99)  # a tiny module saves microseconds: a cold compile never pays
    assert compiled == []
    runner.eager_s_per_item = 10.0  # as if each item took 10 s: 99 items save ~400 s > 300 s cold compile
    runner(batch, items_left=99)
    assert len(compiled) == 1 and runner.compiled_used
    runner(batch, items_left=98)  # the compiled speed is measured and recorded for the next run
    record = accelerate.read_record(accelerate.record_key("tiny", (1, 3, 8, 8), "fp32"))
    assert record is not None and record["compile_s_min"] >= 0 and "speedup" in record


def test_compile_pays_arithmetic():
    # No record: a cold compile (300 s) at 1.7x; the quick run's ~100 slices at 1.3 s do not pay.
    assert not compile_pays(100, 1.3, None)
    assert compile_pays(1000, 1.3, None)
    # A warm cache (a 20 s compile seen before, 2x): the same 100 slices pay.
    assert compile_pays(100, 1.3, {"compile_s_min": 20.0, "speedup": 2.0})


def test_modes_and_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv("SAMLAB_COMPILE", "maybe")
    with pytest.raises(ValueError, match="SAMLAB_COMPILE.*auto, on, off"):
        accelerate.compile_mode()
    monkeypatch.setenv("SAMLAB_PRECISION", "fp8")
    with pytest.raises(ValueError, match="SAMLAB_PRECISION.*fp32, bf16"):
        accelerate.precision()
    monkeypatch.setenv("SAMLAB_THREADS", "1")
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("SAMLAB_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(accelerate._TORCH_DEFAULT_THREADS)  # as if nobody had chosen a count
    assert configure_threads() == accelerate.available_cores() == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert configure_threads() == 1  # the user's OMP_NUM_THREADS wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    if accelerate._TORCH_DEFAULT_THREADS != 1:
        assert configure_threads() == 1  # so does a set_num_threads made after import


def test_channels_last_only_where_convolutions_exist():
    conv = EncoderRunner(_tiny_conv(), torch.device("cpu"), "conv", compile="off")
    linear = EncoderRunner(nn.Sequential(nn.Linear(4, 4)).eval(), torch.device("cpu"), "linear", compile="off")
    assert conv.channels_last and not linear.channels_last


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("SAMLAB_TEST_COMPILE"),
                    reason="runs the real compiler (a cold compile exceeded 7 min on the loaded 2-core CPU); "
                           "set SAMLAB_TEST_COMPILE=1")
def test_a_real_compile_of_a_small_module_is_exact():
    """The one test that runs the compiler, on a tiny module; opt-in, so `make test` never compiles."""
    module = _tiny_conv()
    runner = EncoderRunner(module, torch.device("cpu"), "tiny-real", compile="on")
    batch = torch.rand(2, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = runner(batch)
    with torch.no_grad():
        torch.testing.assert_close(out, module(batch), rtol=1e-5, atol=1e-5)
    fell_back = any("compile of the tiny-real encoder failed" in str(w.message) for w in caught)
    assert runner.compiled_used != fell_back  # either it compiled, or it said why not


# ----------------------------------------------------------------------------------- samlab estimate
def _profile(tmp_path, notebooks: str):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nnotebooks:\n  - notebook: 01_data_curation\n    parameters:\n"
                    "      data_source: phantom\n      phantom_cases: 5\n      phantom_shape: [8, 64, 64]\n" + notebooks)
    return path


def test_estimate_counts_and_times_a_tiny_profile(tmp_path, capsys):
    from samlab.cli import main

    path = _profile(tmp_path, "  - notebook: 02_zero_shot_probing\n    parameters:\n      models: [litemedsam]\n"
                               "      prompt_sources: [oracle]\n      box_modes: [single]\n      expansions_px: [0, 5]\n"
                               "  - notebook: 04_finetuning_grid\n    parameters:\n      methods: [lora]\n"
                               "      max_epochs: 1\n      max_train_slices: 2\n")
    assert main(["estimate", str(path), "--runs-root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    from samlab.estimate import count_work

    _, works, data = count_work(path)
    zero_shot = next(w for w in works if w.notebook.startswith("02_"))
    assert data.cases == 5 and data.test_cases >= 1 and 0 < data.labelled_slices_per_case <= 8
    slices = zero_shot.encoder_passes["litemedsam"]
    assert slices == round(data.test_cases * data.labelled_slices_per_case) > 0
    # single boxes at two expansions: two prompts per structure and slice, one per component more where split
    per_structure = data.prompts_per_structure(["single"], 2)
    assert per_structure == 2.0
    assert zero_shot.prompts["litemedsam"] == round(slices * data.structures_per_slice * per_structure)
    assert data.prompts_per_structure(["single", "per_component"], 1) >= 1.0
    finetune = next(w for w in works if w.notebook.startswith("04_"))
    assert sum(finetune.train_steps.values()) >= 1
    assert "litemedsam: encoder" in out and "predicted: about" in out and "GiB" in out
    assert f"{slices:>14}" in out


def test_estimate_counts_volume_prompting_and_the_corrective_loop(tmp_path):
    from samlab.estimate import count_work

    path = _profile(tmp_path, "  - notebook: 02_zero_shot_probing\n    parameters:\n      box_modes: [single]\n"
                               "  - notebook: 02b_volume_prompting\n    parameters:\n      every_k: [2, 4]\n"
                               "  - notebook: 06_interactive\n    parameters:\n      slices_per_case: 2\n"
                               "      corrective3d_budget: 5\n      corrective3d_patience: 2\n"
                               "      corrective3d_kinds: [box, point]\n")
    _, works, data = count_work(path)
    volume = next(w for w in works if w.notebook.startswith("02b_"))
    structure_slices = data.test_cases * data.labelled_slices_per_case * data.structures_per_slice
    # one-box, per-component, two keyframe budgets and every slice: ~one prompt per covered slice each
    assert volume.prompts["litemedsam"] == round(structure_slices * (2 + data.mean_components + 2))
    assert volume.encoder_passes["litemedsam"] == 0  # notebook 02 embedded the same test slices into the cache
    interactive = next(w for w in works if w.notebook.startswith("06_"))
    without = count_work(_profile(tmp_path, "  - notebook: 06_interactive\n    parameters:\n      slices_per_case: 2\n"
                                            "      corrective3d: false\n"))[1]
    without = next(w for w in without if w.notebook.startswith("06_"))
    # two kinds x (1 + patience = 3) propagations of every covered slice of every test case
    extra = interactive.prompts["litemedsam"] - without.prompts["litemedsam"]
    assert abs(extra - structure_slices * 2 * 3) <= 1 and extra > 0


def test_estimate_refuses_what_cannot_fit(tmp_path, capsys, monkeypatch):
    from samlab import estimate as estimate_module
    from samlab.cli import main

    monkeypatch.setattr(estimate_module, "free_host_memory", lambda: 8 * 2**30)
    path = _profile(tmp_path, "  - notebook: 04_finetuning_grid\n    parameters:\n      models: [sam_vit_h]\n"
                               "      allow_random_init: true\n      scopes: [encoder_decoder]\n      methods: [vanilla]\n"
                               "      recipe_overrides: {batch_size: 16}\n")
    calibrated = []
    monkeypatch.setattr(estimate_module, "calibrate_import_seconds", lambda: calibrated.append(1) or 1.0)
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "sam_vit_h-encoder_decoder-vanilla at batch 16" in err and "GiB" in err
    assert calibrated == []  # refused before any calibration ran


def test_a_weight_update_drops_the_compiled_encoder():
    """Frozen compiles fold the weights in as constants: after an in-place update the runner must recompile,
    or it would keep answering with the old weights. Checked with Inductor itself (freezing on)."""
    module = _tiny_conv().eval()
    runner = EncoderRunner(module, torch.device("cpu"), "tiny-freeze", compile="on")
    batch = torch.rand(1, 3, 8, 8)
    first = runner(batch)
    assert runner.compiled_used
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(2.0)  # an optimiser step does the same: in place, bumping the version counter
    second = runner(batch)
    with torch.no_grad():
        torch.testing.assert_close(second, module(batch), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first, second)
