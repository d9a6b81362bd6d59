"""samlab's 3D propagation vs the official CVPR24 LiteMedSAM inference script's 3D mode.

Same volume, same 3D box, same weights. The official script
(bowang-lab/MedSAM, branch LiteMedSAM, ``CVPR24_LiteMedSAM_infer.py``) is
extracted from a repository snapshot into a temporary folder and run there as
a subprocess on the ``3D*.npz`` it expects (``imgs`` uint8 (D, H, W),
``spacing``, ``boxes`` [[x_min, y_min, z_min, x_max, y_max, z_max]]); none of its
code enters samlab. Runs alternate A B A B; the medians and their ratio are
printed, plus each method's Dice against the ground truth.

Timing: for the official script both the subprocess wall time (Python start,
imports, model build and weight load, inference, npz and overlay PNG saving)
and its own per-case time (``efficiency.csv``: inference + saving, no model
load) are reported; for samlab the time of ``propagate_volume`` with a fresh,
cache-less predictor on a loaded model (so every slice is encoded, as the
official script does), and the same with a warm embedding cache.

Usage::

    python benchmarks/propagate_vs_official.py --official-repo /path/to/MedSAM[.git] \
        [--case phantom|hippocampus] [--reps 3]

``--official-repo`` is a checkout or bare git directory holding the LiteMedSAM
branch (e.g. the snapshot the session's ``fetch github:bowang-lab/MedSAM`` tool returns).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from samlab.metrics import dice  # noqa: E402
from samlab.models import EmbeddingCache, Predictor, load_model  # noqa: E402
from samlab.propagate import box3d_from_mask, propagate_volume  # noqa: E402

SCRIPT = "CVPR24_LiteMedSAM_infer.py"
OFFICIAL_MARGIN_256 = 3  # get_bbox256(bbox_shift=3), in the 256-px model frame


def extract_official(repo: Path, dest: Path, branch: str = "LiteMedSAM") -> Path:
    """The official branch's files in ``dest`` (git archive from a bare or checked-out repo, or a plain copy)."""
    if (repo / SCRIPT).is_file():
        shutil.copytree(repo, dest, dirs_exist_ok=True)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", f"--git-dir={repo if (repo / 'HEAD').is_file() else repo / '.git'}",
                              "archive", branch], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"{repo}: cannot read branch {branch!r} of the official repository: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    if not (dest / SCRIPT).is_file():
        raise SystemExit(f"{repo}: branch {branch!r} has no {SCRIPT}")
    return dest


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """Percentile-clip (0.5-99.5) and scale to 0-255: the CVPR24 challenge's uint8 image convention."""
    lo, hi = np.percentile(volume, [0.5, 99.5])
    scaled = (np.clip(volume, lo, hi) - lo) / max(float(hi - lo), 1e-8) * 255.0
    return np.round(scaled).astype(np.uint8)


def load_case(name: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], str]:
    """(uint8 volume, ground-truth mask, spacing, description) of the benchmark case."""
    if name == "phantom":
        from samlab.data.phantom import STRUCTURES, make_phantom_case

        case = make_phantom_case(21, shape=(32, 160, 160))
        return to_uint8(case.image), np.isin(case.labels, STRUCTURES["bladder"]), case.spacing, \
            "phantom seed 21 (32 x 160 x 160), bladder"
    if name == "hippocampus":
        import SimpleITK as sitk

        root = REPO_ROOT.parent / "shared" / "data" / "msd-hippocampus-raw"
        image = sitk.ReadImage(str(root / "imagesTr" / "hippocampus_003_0000.nii.gz"))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / "hippocampus_003.nii.gz")))
        spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
        return to_uint8(sitk.GetArrayFromImage(image).astype(np.float32)), labels > 0, spacing, \
            "MSD hippocampus_003, both labels"
    raise SystemExit(f"unknown case {name!r}: use phantom or hippocampus")


def run_official(folder: Path, weights: str, work: Path) -> tuple[float, float, np.ndarray]:
    """(subprocess wall s, the script's own per-case s, its segmentation)."""
    out = work / "segs"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, SCRIPT, "-i", str(work / "imgs"), "-o", str(out),
               "-lite_medsam_checkpoint_path", weights, "-device", "cpu", "-png_save_dir", str(work / "overlay")]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the official script failed (exit {done.returncode}) in {folder}:\n{done.stderr[-3000:]}")
    with open(out / "efficiency.csv", newline="") as handle:
        own = float(next(csv.DictReader(handle))["time"])
    return wall, own, np.load(out / "3D_case.npz")["segs"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-repo", type=Path, required=True)
    parser.add_argument("--case", default="phantom", choices=["phantom", "hippocampus"])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    volume, gt, spacing, description = load_case(args.case)
    box = box3d_from_mask(gt)
    model = load_model("litemedsam")
    weights = model.weights.split(":", 1)[1]
    margin = OFFICIAL_MARGIN_256 * max(volume.shape[1:]) / 256.0
    print(f"case: {description}; volume {volume.shape} uint8; 3D box {box.tolist()}; "
          f"weights {weights}", flush=True)
    print(f"samlab margin {margin:.2f} px (the official 3 px in its 256-px frame)", flush=True)

    with tempfile.TemporaryDirectory(prefix="official_litemedsam_") as tmp:
        tmp = Path(tmp)
        folder = extract_official(args.official_repo, tmp / "code")
        (tmp / "imgs").mkdir()
        np.savez_compressed(tmp / "imgs" / "3D_case.npz", imgs=volume, spacing=np.array(spacing),
                            boxes=box[None], gts=gt.astype(np.uint8))
        walls, owns, ours, ours_warm = [], [], [], []
        official_mask = our_mask = None
        cache = EmbeddingCache()
        for rep in range(args.reps):
            wall, own, official_mask = run_official(folder, weights, tmp)  # A
            walls.append(wall)
            owns.append(own)
            predictor = Predictor(model)  # B: fresh, no cache: every slice encoded
            start = time.perf_counter()
            result = propagate_volume(predictor, volume, box, margin=margin, min_area_fraction=0.0)
            ours.append(time.perf_counter() - start)
            our_mask = result.mask
            warm = Predictor(model, cache=cache)
            start = time.perf_counter()
            propagate_volume(warm, volume, box, margin=margin, min_area_fraction=0.0)
            ours_warm.append(time.perf_counter() - start)
            print(f"rep {rep}: official wall {wall:.2f} s (own {own:.2f} s); samlab {ours[-1]:.2f} s "
                  f"(warm cache {ours_warm[-1]:.2f} s, {result.record.encoder_calls} encoder calls)", flush=True)

    med = {k: statistics.median(v) for k, v in
           (("official_wall", walls), ("official_own", owns), ("samlab", ours), ("samlab_warm", ours_warm))}
    print(f"medians over {args.reps} ABAB reps: official wall {med['official_wall']:.2f} s, official per-case "
          f"{med['official_own']:.2f} s, samlab {med['samlab']:.2f} s, "
          f"samlab warm cache {med['samlab_warm']:.2f} s", flush=True)
    print(f"ratio official per-case / samlab (both encode every slice): "
          f"{med['official_own'] / med['samlab']:.2f}x", flush=True)
    print(f"ratio official wall / samlab: {med['official_wall'] / med['samlab']:.2f}x; "
          f"official per-case / samlab warm cache: {med['official_own'] / med['samlab_warm']:.2f}x", flush=True)
    print(f"Dice vs ground truth: official {dice(official_mask, gt):.4f}, samlab {dice(our_mask, gt):.4f}, "
          f"agreement official vs samlab {dice(official_mask, our_mask):.4f}", flush=True)
    print(f"stops (samlab): {result.record.stop_reason}; "
          f"slices visited {sorted(result.record.slices_visited)}", flush=True)


if __name__ == "__main__":
    main()
