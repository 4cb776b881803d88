"""The promises the repository makes about itself."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_the_demo_and_test_commands_and_ci_runs_the_same_tests() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    fence = readme.index("```sh")
    demo, tests = readme[fence + 1], readme[fence + 2]
    assert "pip install" in demo
    assert demo.endswith("aiodots demo")
    assert "pip install" in tests
    assert tests.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must be the one .ci/run runs"


def test_the_package_is_typed() -> None:
    assert (ROOT / "aiodots" / "py.typed").exists()


def test_the_demos_extra_brings_what_the_embedded_emulator_imports() -> None:
    # README's first command installs only the `cli` extra, and the demo runs the
    # emulator, which reads the spec with PyYAML and validates with jsonschema.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "aiodots[testing]" in extras["cli"]
    testing = " ".join(extras["testing"])
    for needed in ("jsonschema", "pyyaml", "rfc3339-validator"):
        assert needed in testing


def test_the_sdist_carries_every_file_the_tests_read_from_the_checkout() -> None:
    # The suite run from an unpacked sdist: test_project reads .ci/run, and
    # test_resources regenerates docs/operations.md and compares it with the file.
    import tomllib

    sdist = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    include = sdist["targets"]["sdist"]["include"]
    for needed in (".ci/run", "docs/operations.md", "README.md", "tests/conftest.py"):
        assert any(needed == entry or needed.startswith(f"{entry}/") for entry in include), (
            f"{needed} is read by the tests but left out of the sdist"
        )


def test_the_test_extras_pytest_asyncio_knows_the_options_pytest_is_given() -> None:
    # pytest-asyncio 0.24 added asyncio_default_fixture_loop_scope; older ones leave it an
    # unknown option, whose warning filterwarnings=error turns into an INTERNALERROR.
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    options = pyproject["tool"]["pytest"]["ini_options"]
    (floor,) = [
        req.removeprefix("pytest-asyncio>=")
        for req in pyproject["project"]["optional-dependencies"]["test"]
        if req.startswith("pytest-asyncio")
    ]
    if "asyncio_default_fixture_loop_scope" in options:
        assert tuple(int(part) for part in floor.split(".")) >= (0, 24)


def test_a_dependency_named_in_several_extras_has_one_floor_in_all() -> None:
    # A floor raised for a reason (redis 5.0.1 for `aclose`) must be raised everywhere
    # the package is named, or an extra installs the version that lacks it.
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        named += extra
    floors: dict[str, set[str]] = {}
    for line in named:
        requirement = Requirement(line)
        floors.setdefault(requirement.name.lower(), set()).add(str(requirement.specifier))
    assert {name: specs for name, specs in floors.items() if len(specs) > 1} == {}
