"""nnU-Net baseline profiles: everything that decides how nnU-Net is planned, trained and applied.

Why a profile object: the quick CPU run and the pelvic paper's 1000-epoch GPU run
differ only in these settings, so notebook 03 names a profile (and overrides a few
values) instead of passing a dozen arguments through every step.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

__all__ = ["NnUNetProfile", "PROFILES", "get_profile"]

class NnUNetProfile(BaseModel):
    """Everything that decides how the nnU-Net baseline is planned, trained and applied.

    ``split="given"`` trains the single fold 0 on the study's own train/val split
    (what the pelvic paper did); ``split="cv5"`` runs nnU-Net's 5-fold
    cross-validation over train+val and ensembles the folds listed in ``folds``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    configuration: Literal["2d", "3d_fullres", "3d_lowres"] = "3d_fullres"
    num_epochs: PositiveInt = 1000
    num_iterations_per_epoch: PositiveInt = 250
    num_val_iterations_per_epoch: PositiveInt = 50
    initial_lr: PositiveFloat = 1e-2
    oversample_foreground_percent: float = Field(
        0.33, ge=0.0, le=1.0, description="share of each batch forced to contain a random foreground class "
        "(nnU-Net's default 0.33); more shows small structures more often in a short schedule")
    save_every: PositiveInt = Field(50, description="epochs between checkpoint_latest.pth writes (resume granularity)")
    batch_size: PositiveInt | None = Field(None, description="override nnU-Net's planned batch size (paper: 2)")
    split: Literal["given", "cv5"] = "given"
    folds: tuple[int, ...] = (0,)
    device: Literal["cpu", "cuda", "mps"] = "cuda"
    checkpoint: Literal["checkpoint_final.pth", "checkpoint_best.pth"] = "checkpoint_final.pth"
    use_mirroring: bool = Field(True, description="test-time mirroring (8x slower in 3D)")
    tile_step_size: float = Field(0.5, gt=0.0, le=1.0)
    run_validation: bool = Field(True, description="nnU-Net's own validation of the fold after training")
    verify_dataset_integrity: bool = True
    num_processes: PositiveInt = Field(2, description="nnU-Net worker processes for preprocessing and export")
    num_data_augmentation_processes: int | None = Field(
        None, ge=0, description="nnUNet_n_proc_DA; 0 = augment in the training process; None = nnU-Net's default"
    )
    torch_threads: PositiveInt | None = Field(
        None, description="torch threads in nnU-Net's processes; None = nnU-Net's choice (all cores on CPU, 1 on GPU)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check_folds(self) -> "NnUNetProfile":
        if not self.folds or len(set(self.folds)) != len(self.folds):
            raise ValueError(f"folds must be a non-empty list without repeats, got {self.folds}")
        if self.split == "given" and self.folds != (0,):
            raise ValueError(f"split='given' defines only fold 0, got folds={self.folds}; use split='cv5' for more")
        if self.split == "cv5" and not set(self.folds) <= set(range(5)):
            raise ValueError(f"split='cv5' has folds 0..4, got folds={self.folds}")
        return self

    def schedule(self) -> dict[str, Any]:
        """The trainer attributes :class:`nnUNetTrainerSamlab` sets from this profile."""
        return {
            "num_epochs": self.num_epochs,
            "num_iterations_per_epoch": self.num_iterations_per_epoch,
            "num_val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "initial_lr": self.initial_lr,
            "oversample_foreground_percent": self.oversample_foreground_percent,
            "save_every": self.save_every,
        }


#: ``quick``: minutes on 2 CPU cores on a small phantom; ``smoke`` (below): the quick profile cut to 2 x 15
#: iterations, a model that exercises every step but segments only the large structures (notebook 03's stored
#: default, so that nbval and ``make test`` stay short); ``paper``: the pelvic study's setting (GPU).
PROFILES: dict[str, NnUNetProfile] = {
    "quick": NnUNetProfile(
        name="quick",
        configuration="2d",
        num_epochs=6,
        num_iterations_per_epoch=25,
        num_val_iterations_per_epoch=2,
        initial_lr=1e-2,
        save_every=1,
        batch_size=None,
        device="cpu",
        checkpoint="checkpoint_final.pth",
        use_mirroring=False,
        run_validation=False,
        num_processes=1,
        num_data_augmentation_processes=0,
        # On a shared 2-core machine one thread is ~10x faster than two (0.3 vs 3.7 s per 2d iteration measured
        # under contention): busy-waiting OpenMP threads fight the other processes.
        torch_threads=1,
    ),
    "paper": NnUNetProfile(
        name="paper",
        configuration="3d_fullres",
        num_epochs=1000,
        num_iterations_per_epoch=250,
        num_val_iterations_per_epoch=50,
        initial_lr=1e-2,
        save_every=50,
        batch_size=2,
        split="given",
        folds=(0,),
        device="cuda",
        # "the checkpoint with the best validation loss was chosen" (nnU-Net's best = EMA pseudo-Dice)
        checkpoint="checkpoint_best.pth",
        use_mirroring=True,
        run_validation=True,
        num_processes=4,
        num_data_augmentation_processes=None,
    ),
}


PROFILES["smoke"] = PROFILES["quick"].model_copy(update={"name": "smoke", "num_epochs": 2, "num_iterations_per_epoch": 15})


def get_profile(profile: str | NnUNetProfile | Mapping[str, Any], **overrides: Any) -> NnUNetProfile:
    """Resolve a profile by name (``"smoke"``, ``"quick"``, ``"paper"``), dict or instance, with validated overrides."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown nnU-Net profile {profile!r}; choose one of {sorted(PROFILES)}")
        base = PROFILES[profile].model_dump()
    elif isinstance(profile, NnUNetProfile):
        base = profile.model_dump()
    elif isinstance(profile, Mapping):
        base = dict(profile)
    else:
        raise TypeError(f"profile must be a name, a mapping or an NnUNetProfile, got {type(profile).__name__}")
    return NnUNetProfile.model_validate({**base, **overrides})
