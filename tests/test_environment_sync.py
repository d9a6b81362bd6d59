"""pyproject.toml and environment.yml must list the same dependencies with the same ranges."""
import tomllib

import yaml

from conftest import REPO_ROOT


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["test"])


def _environment_requirements() -> set[str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must have exactly one pip: section"
    return set(pip_sections[0])


def test_environment_yml_mirrors_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert py - env == set(), f"in pyproject.toml but not environment.yml: {sorted(py - env)}"
    assert env - py == set(), f"in environment.yml but not pyproject.toml: {sorted(env - py)}"


def test_torch_pinned_to_the_pair_that_imports_with_torchvision():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in makefile
    assert "torch==2.13" not in makefile


def test_ci_calls_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("```")[1], "the README's first code block must show `make test`"
    assert "make test" in ci
