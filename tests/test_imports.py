"""The package's import structure: no import cycles, and imports at the top of each module.

Read from the source (ast), so that an import inside a function counts too: a cycle hidden in a
function import is still a cycle, and works only as long as nobody imports in another order.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import shapeatlas

SRC = Path(__file__).resolve().parents[1] / "src"
#: The command line imports each verb's library when it runs, so that `--help` starts fast
#: (see its module docstring); nothing else imports inside functions.
LAZY_ALLOWED = {"shapeatlas.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "shapeatlas").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported shapeatlas module, whether the import is at the module's top level)."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    top |= {id(n) for s in tree.body if isinstance(s, ast.If) for n in s.body}  # TYPE_CHECKING
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            mods = [n if n in MODULES else node.module for n in names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        out += [(m, id(node) in top) for m in mods if m.startswith("shapeatlas")]
    return out


def test_every_module_is_found():
    assert {"shapeatlas", "shapeatlas.cli", "shapeatlas.runs.load",
            "shapeatlas.mesh.projection"} <= set(MODULES)


def test_no_import_cycles():
    graph = {m: {d for d, _ in _imports(p) if d in MODULES and d != m}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(d):] + [m, d]))
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("module", sorted(set(MODULES) - LAZY_ALLOWED))
def test_imports_are_at_the_top(module):
    inner = [d for d, top in _imports(MODULES[module]) if not top]
    assert not inner, f"{module} imports {inner} inside a function"


def test_top_level_api_resolves_lazily():
    code = ("import sys, shapeatlas; assert 'torch' not in sys.modules; "
            "names = [n for n in shapeatlas.__all__ if getattr(shapeatlas, n) is None]; "
            "assert not names, names; "
            "from shapeatlas.runs.load import load_model; "
            "assert shapeatlas.load_run is load_model")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        shapeatlas.nope  # noqa: B018


def test_class_names_are_unique_in_the_package():
    seen: dict[str, str] = {}
    for module, path in sorted(MODULES.items()):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                assert node.name not in seen, f"{node.name} in {seen.get(node.name)} and {module}"
                seen[node.name] = module
