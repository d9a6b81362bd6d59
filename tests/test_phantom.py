"""The embedded phantom: deterministic files with the pelvic study's difficulties."""
import hashlib
import json

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from samlab.data.phantom import LABELS, STRUCTURES, make_phantom_case, write_phantom_dataset


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    kw = dict(n_cases=2, shape=(10, 48, 48))
    a = _digests(write_phantom_dataset(tmp_path / "a", seed=3, **kw))
    b = _digests(write_phantom_dataset(tmp_path / "b", seed=3, **kw))
    c = _digests(write_phantom_dataset(tmp_path / "c", seed=4, **kw))
    assert a == b
    assert a["imagesTr/pelvis_000_0000.nii.gz"] != c["imagesTr/pelvis_000_0000.nii.gz"]


def test_nnunet_raw_layout_and_header_spacing(tmp_path):
    root = write_phantom_dataset(tmp_path, n_cases=3, shape=(10, 48, 48), spacing=(3.0, 1.2, 1.2))
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"] == LABELS and meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    image = sitk.ReadImage(str(root / "imagesTr" / "pelvis_002_0000.nii.gz"))
    assert np.allclose(image.GetSpacing(), (1.2, 1.2, 3.0))  # SimpleITK order: x, y, z
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / "pelvis_002.nii.gz")))
    assert labels.shape == (10, 48, 48)
    assert not list(root.rglob(".tmp_*"))


def test_every_structure_present_with_its_difficulty():
    case = make_phantom_case(5)
    labels = case.labels
    for name, values in STRUCTURES.items():
        assert np.isin(labels, values).sum() > 0, name
    # bilateral, disjoint: two components on the slices where they occur
    for name in ("bone", "obturator_internus", "neurovascular_bundle"):
        mask = np.isin(labels, STRUCTURES[name])
        counts = [ndimage.label(mask[z])[1] for z in np.flatnonzero(mask.any(axis=(1, 2)))]
        assert np.median(counts) == 2, name
    # nested: transition zone lies inside the prostate's outline on every slice
    tz, prostate = labels == LABELS["transition_zone"], np.isin(labels, STRUCTURES["prostate"])
    assert np.all(prostate[tz])
    peripheral = labels == LABELS["prostate_peripheral"]
    assert peripheral.sum() > tz.sum() * 0.5
    # ring: the rectum's wall encloses background (its lumen)
    rectum = labels == LABELS["rectum"]
    z = int(np.argmax(rectum.sum(axis=(1, 2))))
    assert (ndimage.binary_fill_holes(rectum[z]) & ~rectum[z]).sum() > 10
    # tiny: neurovascular bundles are a few dozen pixels per slice
    nvb = labels == LABELS["neurovascular_bundle"]
    per_slice = nvb.sum(axis=(1, 2))
    assert 0 < per_slice[per_slice > 0].max() < 100


def test_t2_like_contrast_bias_and_noise():
    case = make_phantom_case(1, noise_sigma=0.04)
    image, labels = case.image, case.labels
    bladder = image[labels == LABELS["bladder"]].mean()
    muscle = image[labels == LABELS["obturator_internus"]].mean()
    assert bladder > 2.5 * muscle, "urine is bright and muscle dark on T2"
    assert image[labels == LABELS["bladder"]].std() > 0.02 * bladder, "noise + bias field vary intensities"
    assert np.array_equal(image, make_phantom_case(1, noise_sigma=0.04).image)
