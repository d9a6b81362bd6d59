"""``samlab estimate PROFILE``: how long a profile will take and how much memory it needs, before it runs.

Why: a student should see "about 38 min, 3.1 GB" before starting a long run, and a clear refusal
instead of an out-of-memory crash an hour in (MedSAM users report exactly that on ViT-H at 1024 px).

How: the work of each notebook is *counted* from the profile (slices embedded, prompts decoded,
training iterations; the phantom's slices and structures are generated, which takes milliseconds),
and each unit of work is *timed* by a short calibration on this machine with the same code paths
(the default encoder path, the mask decoder, one cached-embedding training step per configuration,
a fresh interpreter's imports). Predicted seconds = counts x unit times + a kernel start per
notebook. Peak memory is the calibration's measured peak, and a configuration whose predicted
training memory exceeds the memory available is refused before anything is timed. nnU-Net
iterations are counted but timed only from a previous run of the same profile (``run.json``);
without one they are left out of the total, and the output says so.
"""
from __future__ import annotations

import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .profiles import load_profile
from .io import read_json
from .models.accelerate import free_host_memory

#: Fraction of the free memory a configuration may be predicted to use before it is refused.
MEMORY_HEADROOM = 0.9


class EstimateRefused(RuntimeError):
    """A configuration of the profile cannot fit in this machine's memory."""


@dataclass
class Work:
    """What one notebook does, counted from the profile."""

    notebook: str
    encoder_passes: dict[str, int] = field(default_factory=dict)  # model -> slices embedded
    prompts: dict[str, int] = field(default_factory=dict)  # model -> prompts decoded
    train_steps: dict[tuple[str, str, str, int], int] = field(default_factory=dict)  # (model, scope, method, batch)
    nnunet_iterations: int = 0


@dataclass
class DataShape:
    cases: int
    test_cases: int
    train_cases: int
    labelled_slices_per_case: float
    structures_per_slice: float
    image_size: int
    components: tuple[int, ...] = (1,)  # connected components of each (labelled slice, present structure)

    @property
    def mean_components(self) -> float:
        return float(np.mean(self.components))

    def items_per_slice(self, training_mode: str) -> float:
        """Training items and decoded prompts per slice: one per structure in box and point mode, one per slice
        in automatic."""
        return 1.0 if training_mode == "automatic" else self.structures_per_slice

    def prompts_per_structure(self, modes: list[str], expansions: int) -> float:
        """Unique prompts one structure on one slice gets (zero-shot decodes identical prompts once)."""
        total = 0.0
        for n in self.components:
            boxes = 1 if "single" in modes else 0
            for mode in ("per_component", "per_part"):
                if mode in modes and (n > 1 or "single" not in modes):
                    boxes += n
            total += boxes * expansions + (n if "point" in modes else 0)
        return total / len(self.components)


def data_shape(params) -> DataShape:
    """Slices and structures of the curated data: the phantom is generated (cheap), raw data read from headers."""
    from .data.splits import split_counts

    if params.data_source == "phantom":
        from .data.phantom import STRUCTURES, make_phantom_case
        from .prompts import component_boxes

        shape = tuple(params.phantom_shape)
        labelled, present, components = [], [], []
        for i in range(params.phantom_cases):
            case = make_phantom_case(params.seed * 1000 + i, shape=shape, spacing=tuple(params.phantom_spacing))
            for z in range(shape[0]):
                masks = [np.isin(case.labels[z], values) for values in STRUCTURES.values()]
                masks = [m for m in masks if m.any()]
                if masks:
                    present.append(len(masks))
                    components.extend(max(1, len(component_boxes(m))) for m in masks)
            labelled.append(sum(case.labels[z].any() for z in range(shape[0])))
        cases, per_case, structures, size = params.phantom_cases, float(np.mean(labelled)), float(np.mean(present)), max(shape[1:])
    else:
        import SimpleITK as sitk

        raw = Path(params.raw_dir)
        dataset = read_json(raw / "dataset.json", "dataset.json")
        labels = sorted((raw / "labelsTr").glob("*.nii*"))
        if not labels:
            raise FileNotFoundError(f"{raw / 'labelsTr'}: no label volumes to count slices from")
        sizes = []
        for path in labels:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            sizes.append(reader.GetSize())
        cases, per_case = len(labels), float(np.mean([s[2] for s in sizes]))
        structures = float(len([k for k in dataset.get("labels", {}) if str(k).lower() != "background"]))
        size = int(max(max(s[:2]) for s in sizes))
    counts = split_counts(cases, params.split_scheme)
    if params.data_source != "phantom":
        components = [1]
    return DataShape(cases, counts["test"], counts["train"], per_case, structures, size, tuple(components))


def count_work(profile_path: str | Path) -> tuple[str, list[Work], DataShape | None]:
    """The profile's name, each notebook's counted work, and the data's shape."""
    profile, steps = load_profile(profile_path)
    data: DataShape | None = None
    works: list[Work] = []
    for name, p in steps:
        work = Work(name)
        if name == "01_data_curation":
            data = data_shape(p)
        elif data is None:
            pass
        elif name.startswith("02b_"):
            # Every strategy decodes about one prompt per slice a structure covers: the one-box propagation,
            # the per-component propagation (x components), each keyframe budget, the box on every slice.
            cases = min(data.test_cases, p.max_cases or data.test_cases)
            structure_slices = cases * data.labelled_slices_per_case * data.structures_per_slice
            strategies = 2 + data.mean_components + len(p.every_k)
            embedded = {m for w in works if w.notebook.startswith("02_") for m in w.encoder_passes}
            for model in p.models:  # notebook 02 on the same test cases left their embeddings in the cache
                work.encoder_passes[model] = 0 if p.use_cache and model in embedded else round(
                    cases * data.labelled_slices_per_case)
                work.prompts[model] = round(structure_slices * strategies)
        elif name.startswith("02_"):
            cases = min(data.test_cases, p.max_cases or data.test_cases)
            slices = round(cases * data.labelled_slices_per_case)
            per_structure = len(p.prompt_sources) * data.prompts_per_structure(list(p.box_modes), len(p.expansions_px))
            for model in p.models:
                work.encoder_passes[model] = slices
                work.prompts[model] = round(slices * data.structures_per_slice * per_structure)
        elif name.startswith("03_"):
            from .baselines.nnunet.profiles import PROFILES as NNUNET_PROFILES  # pydantic only: light

            named = NNUNET_PROFILES[p.profile]  # None: the named profile's own schedule
            work.nnunet_iterations = ((p.num_epochs or named.num_epochs) *
                                      (p.num_iterations_per_epoch or named.num_iterations_per_epoch))
        elif name.startswith("04_"):
            train = min(p.max_train_slices or 10**9, round(data.train_cases * data.labelled_slices_per_case))
            val = min(p.max_val_slices or 10**9, train)
            test_cases = min(data.test_cases, p.max_test_cases or data.test_cases)
            test = round(test_cases * data.labelled_slices_per_case)
            for model in p.models:
                work.encoder_passes[model] = train + val + test
                for scope in p.scopes:
                    for method in p.methods:
                        for mode in p.modes:
                            recipe = p.training_recipe(mode)  # automatic mode may change batch and epochs
                            key = (model, scope, method, recipe.batch_size)
                            per_slice = data.items_per_slice(mode)
                            items = math.ceil(train * per_slice / recipe.batch_size)
                            epochs = recipe.max_epochs
                            work.train_steps[key] = work.train_steps.get(key, 0) + epochs * items
                            work.prompts[model] = work.prompts.get(model, 0) + round(
                                (val * epochs + test) * per_slice)
        elif name.startswith("05_"):
            test_cases = min(data.test_cases, p.max_test_cases or data.test_cases)
            test = round(test_cases * data.labelled_slices_per_case)
            for model in p.models:
                work.encoder_passes[model] = sum(p.shots) * len(p.seeds) + test
                for scope in p.scopes:
                    for method in p.methods:
                        for mode in p.modes:
                            recipe = p.training_recipe(mode)
                            key = (model, scope, method, recipe.batch_size)
                            per_slice = data.items_per_slice(mode)
                            steps_ = sum(math.ceil(k * per_slice / recipe.batch_size) for k in p.shots)
                            work.train_steps[key] = work.train_steps.get(key, 0) + steps_ * len(p.seeds) * recipe.max_epochs
                            runs = len(p.shots) * len(p.seeds)
                            work.prompts[model] = work.prompts.get(model, 0) + round(runs * test * per_slice)
        elif name.startswith("06_"):
            cases = min(data.test_cases, p.max_cases or data.test_cases)
            slices = cases * min(p.slices_per_case or 10**9, round(data.labelled_slices_per_case))
            # Section 7: each (case, structure, kind) loop re-propagates the volume once per prompt; loops mostly
            # stop after `patience` corrections without a gain (25 of 32 did in the quick run), so 1 + patience
            # propagations of about one prompt per covered slice, at most the budget.
            loops = cases * len(p.corrective3d_kinds) if p.corrective3d else 0
            propagations = min(p.corrective3d_budget, 1 + p.corrective3d_patience)
            corrective = loops * data.labelled_slices_per_case * data.structures_per_slice * propagations
            for model in p.models:
                work.encoder_passes[model] = slices
                work.prompts[model] = round(slices * data.structures_per_slice * len(p.prompt_kinds) * p.n_draws
                                            * p.max_components + corrective)
        works.append(work)
    return profile.name, works, data


def predicted_training_bytes(model: str, scope: str, batch: int) -> int:
    """A conservative a-priori memory bound for one training step, used to refuse before calibrating.

    Parameters + AdamW state + gradients (4 x the weights when the encoder trains, weights alone
    when it is frozen) and activations: ~6 KB per input pixel and slice without encoder gradients
    (the decoder's), ~3x that when the encoder is in the backward pass.
    """
    from .models import get_spec
    from .models.registry import _skeleton

    spec = get_spec(model)
    params = sum(p.numel() for p in _skeleton(model).parameters()) * 4
    per_pixel = 6 * 1024 * (3 if scope == "encoder_decoder" else 1)
    weights = params * (4 if scope == "encoder_decoder" else 1)
    return int(weights + batch * spec.image_size**2 * per_pixel)


def check_memory(works: list[Work]) -> list[str]:
    """Every training configuration's bound against the free memory; raises :class:`EstimateRefused`."""
    free = free_host_memory()
    problems = []
    for work in works:
        for (model, scope, method, batch) in work.train_steps:
            need = predicted_training_bytes(model, scope, batch)
            if need > MEMORY_HEADROOM * free:
                problems.append(f"{work.notebook}: {model}-{scope}-{method} at batch {batch} needs about "
                                f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are free -- lower batch_size "
                                "(recipe_overrides) or use the decoder scope / a smaller model")
    if problems:
        raise EstimateRefused("configuration cannot fit in memory:\n  " + "\n  ".join(problems))
    return []


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def calibrate_import_seconds() -> float:
    """Seconds for a fresh interpreter to import samlab's model and training code (each notebook pays it)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import samlab.models, samlab.train, samlab.zeroshot"], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def calibrate_model(model: str, image_size: int, repeats: int = 2) -> tuple[float, float]:
    """(encoder seconds per slice on the default path, decoder seconds per prompt), real weights where shipped."""
    from .models import Predictor, load_model

    loaded = load_model(model, allow_random_init=model != "litemedsam")
    predictor = Predictor(loaded)
    rng = np.random.default_rng(0)
    images = [rng.random((image_size, image_size)).astype(np.float32) for _ in range(repeats)]
    predictor.embed(images[0])  # first call: allocator and kernels
    start = time.perf_counter()
    embeddings = predictor.embed_many(images[1:] or images)
    encoder_s = (time.perf_counter() - start) / max(len(images) - 1, 1)
    boxes = np.array([[image_size * 0.2, image_size * 0.2, image_size * 0.6, image_size * 0.7]] * 4)
    predictor.decode(embeddings[0], boxes=boxes[:2])
    start = time.perf_counter()
    predictor.decode(embeddings[0], boxes=boxes)
    return encoder_s, (time.perf_counter() - start) / len(boxes)


def time_training_step(model: str, scope: str, method: str, batch: int, iters: int = 2,
                       device: str = "cpu") -> float:
    """Seconds per optimiser step as the training loop takes it (random weights: time does not depend on them).

    Decoder scope: on cached embeddings (the loop embeds each slice once, see samlab.train.loop),
    so the encoder is not in the step. Encoder+decoder scope: the encoder forward and backward too.
    """
    import torch

    from .train import decode, segmentation_loss
    from .train.configs import GridConfig, build_model

    dev = torch.device(device)
    net = build_model(GridConfig(model, scope, method), allow_random_init=True, device=dev).module.train()
    size = int(net.image_encoder.img_size)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    images = torch.rand(batch, 3, size, size, device=dev)
    with torch.no_grad():
        cached = net.image_encoder(images[:1]).expand(batch, -1, -1, -1).contiguous()
    boxes = torch.tensor([[size * 0.3, size * 0.3, size * 0.6, size * 0.7]] * batch, device=dev)
    low = 4 * int(net.prompt_encoder.image_embedding_size[0])
    target = (torch.rand(batch, 1, low, low, device=dev) > 0.5).float()

    def step() -> None:
        features = net.image_encoder(images) if scope == "encoder_decoder" else cached
        logits, _ = decode(net, features, boxes, multimask=False)
        loss, _ = segmentation_loss("dice_ce", logits, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def _previous_nnunet_seconds(profile_name: str, runs_root: str | Path | None) -> float | None:
    from .validate import profile_run_dir

    record = profile_run_dir(profile_name, runs_root) / "run.json"
    if not record.is_file():
        return None
    try:
        entries = read_json(record, "run record").get("notebooks", [])
    except (ValueError, AttributeError):
        return None
    seconds = [e.get("seconds") for e in entries if str(e.get("notebook", "")).startswith("03_") and e.get("status") == "ok"]
    return float(seconds[0]) if seconds and seconds[0] is not None else None


def estimate(profile_path: str | Path, runs_root: str | Path | None = None, echo=print) -> dict:
    """Count, refuse what cannot fit, calibrate, and print a per-notebook prediction; returns the numbers."""
    name, works, data = count_work(profile_path)
    check_memory(works)
    import_s = calibrate_import_seconds()
    models = sorted({m for w in works for m in (*w.encoder_passes, *w.prompts)})
    unit = {m: calibrate_model(m, data.image_size if data else 256) for m in models}
    steps = {key: time_training_step(*key) for w in works for key in w.train_steps}
    peak = _peak_rss_gib()
    nnunet_s = _previous_nnunet_seconds(name, runs_root)
    rows, total, missing = [], 0.0, []
    for w in works:
        seconds = import_s
        seconds += sum(n * unit[m][0] for m, n in w.encoder_passes.items())
        seconds += sum(n * unit[m][1] for m, n in w.prompts.items())
        seconds += sum(n * steps[k] for k, n in w.train_steps.items())
        if w.nnunet_iterations:
            if nnunet_s is None:
                missing.append(w.notebook)
            else:
                seconds = nnunet_s
        total += seconds
        rows.append({"notebook": w.notebook, "encoder_passes": sum(w.encoder_passes.values()),
                     "prompts": sum(w.prompts.values()), "train_iterations": sum(w.train_steps.values()),
                     "nnunet_iterations": w.nnunet_iterations, "seconds": seconds})
    echo(f"profile {name}: calibrated on this machine (imports {import_s:.1f} s; "
         + "; ".join(f"{m}: encoder {e:.2f} s/slice, decoder {d * 1000:.0f} ms/prompt" for m, (e, d) in unit.items())
         + "; " + "; ".join(f"{'-'.join(map(str, k[:3]))} batch {k[3]}: {s:.2f} s/iter" for k, s in steps.items()) + ")")
    echo(f"{'notebook':<24} {'encoder passes':>14} {'prompts':>8} {'train iters':>11} {'nnU-Net iters':>13} {'seconds':>8}")
    for r in rows:
        echo(f"{r['notebook']:<24} {r['encoder_passes']:>14} {r['prompts']:>8} {r['train_iterations']:>11} "
             f"{r['nnunet_iterations']:>13} {r['seconds']:>8.0f}")
    note = f" (without {', '.join(missing)}: no earlier run of this profile to time nnU-Net from)" if missing else ""
    echo(f"predicted: about {total / 60:.1f} min, peak memory about {peak:.1f} GiB (calibration's process peak){note}")
    return {"profile": name, "rows": rows, "seconds": total, "peak_gib": peak, "not_timed": missing}
