"""The README's commands and CI must agree, and the install must never pull CUDA packages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_test_command() -> str:
    text = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"# README-TEST-COMMAND\n(.+?)\n# END-README-TEST-COMMAND", text, re.S)
    assert m, ".ci/run has no README-TEST-COMMAND block"
    return m.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert _ci_test_command() in [b.strip() for b in blocks]


def test_readme_opens_with_demo_and_pins_torch():
    readme = (ROOT / "README.md").read_text()
    first_blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)[:2]
    assert "shapeatlas demo" in first_blocks[0]
    assert all("torch==2.13.0" in b for b in first_blocks)


def test_torch_is_not_a_hard_dependency():
    # A bare `torch` requirement would make pip pull the newest CUDA build on a fresh machine.
    deps = re.search(r"dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S)
    assert deps
    names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower()
             for d in re.findall(r'"([^"]+)"', deps.group(1))]
    assert "torch-geometric" in names and "torch" not in names
