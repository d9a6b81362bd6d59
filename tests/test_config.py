"""Profiles and notebook parameters are validated before anything runs."""
import papermill as pm
import pytest

from conftest import REPO_ROOT
from samlab.config import NOTEBOOK_SCHEMAS, ProfileError
from samlab.profiles import load_profile, validate_notebook_parameters


def _write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_shipped_profiles_and_sweep_grids_validate(tmp_path):
    import yaml

    from samlab.sweep import expand_grid

    for path in sorted((REPO_ROOT / "params").glob("*.yaml")):
        if "grid" in (yaml.safe_load(path.read_text()) or {}):
            assert expand_grid(path, runs_root=tmp_path, write_profiles=False)[2], path
        else:
            profile, steps = load_profile(path)
            assert steps, path


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    path = _write(tmp_path, "name: t\nnotebooks:\n  - notebook: 02_zero_shot_probing\n    parameters: {box_mode: single}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert "box_mode" in message and "box_modes" in message and str(path) in message


def test_bad_value_names_the_allowed_values(tmp_path):
    path = _write(tmp_path, "name: t\nnotebooks:\n  - notebook: 02_zero_shot_probing\n    parameters: {models: [sam_vit_x]}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "models" in str(info.value) and "'litemedsam'" in str(info.value)


def test_negative_expansion_and_unknown_notebook_are_refused(tmp_path):
    with pytest.raises(ProfileError, match="expansions_px"):
        validate_notebook_parameters("02_zero_shot_probing", {"expansions_px": [-5]})
    path = _write(tmp_path, "name: t\nnotebooks:\n  - notebook: 99_nothing\n")
    with pytest.raises(ProfileError, match="99_nothing"):
        load_profile(path)


def test_profile_name_must_be_a_safe_folder_name(tmp_path):
    path = _write(tmp_path, "name: ../escape\nnotebooks:\n  - notebook: 01_data_curation\n")
    with pytest.raises(ProfileError, match="name"):
        load_profile(path)


def test_unused_common_key_is_an_error(tmp_path):
    path = _write(tmp_path, "name: t\ncommon: {sed: 1}\nnotebooks:\n  - notebook: 01_data_curation\n")
    with pytest.raises(ProfileError, match="sed"):
        load_profile(path)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_SCHEMAS))
def test_notebook_parameter_cell_matches_its_schema(notebook):
    """Every schema field is a notebook parameter (and vice versa), with the same default."""
    path = REPO_ROOT / "notebooks" / f"{notebook}.ipynb"
    declared = pm.inspect_notebook(str(path))
    schema = NOTEBOOK_SCHEMAS[notebook]
    assert set(declared) == set(schema.model_fields), f"{path}: parameters cell and schema differ"
    defaults = schema()
    for name, info in declared.items():
        value = eval(info["default"])  # the cell holds Python literals only
        assert value == getattr(defaults, name), f"{path}: default of {name} differs from the schema"


def test_every_notebook_has_a_schema():
    stems = {p.stem for p in (REPO_ROOT / "notebooks").glob("*.ipynb")}
    assert stems == set(NOTEBOOK_SCHEMAS), f"notebooks without schema / schemas without notebook: {stems ^ set(NOTEBOOK_SCHEMAS)}"


def test_finetune_modes_and_the_legacy_single_mode():
    from samlab.config import FinetuneParams

    assert FinetuneParams().modes == ["box"]
    assert FinetuneParams(mode="automatic").modes == ["automatic"]  # a profile written before `modes` existed
    assert FinetuneParams(modes=["automatic", "box"]).modes == ["automatic", "box"]
    with pytest.raises(ValueError, match="not both"):
        FinetuneParams(mode="box", modes=["automatic"])
    with pytest.raises(ValueError, match="repeat"):
        FinetuneParams(modes=["box", "box"])
    with pytest.raises(ValueError, match="modes"):
        FinetuneParams(modes=["prompted"])
