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
