"""The import rules of docs/design.md's map, checked on the source: who may import whom.

    losses/          torch and the standard library only
    jobs/core/       the shared vocabulary: nothing above it (the spec asks the algorithm registry,
                     jobs/algorithms/__init__.py, for an algorithm's rules)
    jobs/algorithms/ jobs/core, losses
    actors/          jobs/core, jobs/algorithms, losses; never the driver, its stages or its output files
    jobs/stages/, jobs/outputs/: anything but the driver's own modules
Imports under `if TYPE_CHECKING:` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
import sys

import pytest

from tests.conftest import REPO

DRIVER = ("jobs.run", "jobs.onpolicy", "jobs.startup", "jobs.resume", "jobs.cli", "jobs.stop_signals",
          "jobs.gpu_checks", "jobs.spec_reference")


def imports_of(path) -> list[str]:
    """Absolute module names a file imports at run time (TYPE_CHECKING blocks skipped)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for child in block.body for node in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def files(folder: str):
    return sorted((REPO / folder).rglob("*.py"))


def violations(folder: str, allowed) -> list[str]:
    return [f"{path.relative_to(REPO)} imports {module}" for path in files(folder) for module in imports_of(path)
            if within(module, "actors", "jobs", "losses") and not allowed(module)]


def test_losses_import_only_torch_and_the_standard_library():
    bad = [f"{path.relative_to(REPO)} imports {module}" for path in files("losses") for module in imports_of(path)
           if module.split(".")[0] not in {"torch", "losses", "__future__", *sys.stdlib_module_names}]
    assert not bad, bad


@pytest.mark.parametrize("folder, allowed", [
    ("jobs/core", lambda m: within(m, "jobs.core") or m in ("jobs.algorithms", *(f"jobs.algorithms.{n}" for n in (
        "REGISTERED", "algorithm_named", "names_where")))),
    ("jobs/algorithms", lambda m: within(m, "jobs.core", "jobs.algorithms", "losses")),
    ("actors", lambda m: within(m, "jobs.core", "jobs.algorithms", "losses", "actors")),
    ("jobs/stages", lambda m: not within(m, *DRIVER)),
    ("jobs/outputs", lambda m: not within(m, *DRIVER)),
])
def test_each_layer_imports_only_what_is_below_it(folder, allowed):
    bad = violations(folder, allowed)
    assert not bad, bad


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from jobs.run import main\n"
                   "from jobs.onpolicy import run_onpolicy\n")
    assert imports_of(bad) == ["typing", "typing.TYPE_CHECKING", "jobs.onpolicy", "jobs.onpolicy.run_onpolicy"]
