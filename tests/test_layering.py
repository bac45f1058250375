"""The import table of docs/architecture.md §1, checked with ast over the source tree.

Every source file belongs to one layer, found from its path: the longest matching prefix in
``LAYERS`` decides. The entry-point layer sits on top: ``bench/`` and the command-line shims
that a required command places inside a lower package (``python -m benchmark.report`` runs
``benchmark/report.py``, which only calls ``reports.cli.main``). Entry points may import every
layer, and no other layer imports them. A module name in a rule covers its submodules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# path prefix -> layer
LAYERS = {
    "bench/": "entry",
    "benchmark/report.py": "entry",
    "benchmark/": "benchmark",
    "methods/": "methods",
    "sweeps/": "sweeps",
    "reports/": "reports",
}
# layer -> modules it must never import (besides the entry points)
FORBIDDEN = {
    "entry": set(),
    "benchmark": {"methods", "sweeps", "reports"},
    "methods": {"sweeps", "reports", "mlflow", "optuna"},
    "sweeps": {"methods", "reports"},
    "reports": {"methods", "sweeps", "benchmark.training", "benchmark.experiment"},
}
# layer -> the only modules of the core it may import
CORE_INTERFACE = {
    "methods": {"benchmark.interface", "benchmark.registry", "benchmark.schedules",
                "benchmark.data.batch", "benchmark.errors", "benchmark.precision"},
}
# external systems with one owner each
OWNERS = {
    "mlflow": {"benchmark/tracking.py"},
    "rich": {"benchmark/console.py", "reports/"},
    "optuna": {"sweeps/", "reports/"},
    # the `features` extra (python -m benchmark.features): never imported by the rest of the core
    "transformers": {"benchmark/features/"},
    "tokenizers": {"benchmark/features/"},
    "av": {"benchmark/features/"},
    "PIL": {"benchmark/features/"},
}


def _imports(path: Path) -> set[str]:
    """Dotted names imported by ``path``: ``import a.b`` gives a.b; ``from a.b import c`` gives
    a.b and a.b.c (c may be a module); ``importlib.import_module`` and ``__import__`` called
    with a literal name count as well."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) in ("__import__", "import_module"))):
            names.add(node.args[0].value)
    return names


def _covers(module: str, name: str) -> bool:
    return name == module or name.startswith(module + ".")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def layer_of(rel: str) -> str | None:
    matches = [prefix for prefix in LAYERS
               if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix))]
    return LAYERS[max(matches, key=len)] if matches else None


def _module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> list[Path]:
    packages = sorted({prefix.split("/")[0] for prefix in LAYERS})
    return [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]


ENTRY_POINTS = {_module_name(_rel(p)) for p in _sources() if layer_of(_rel(p)) == "entry"}


def violations(path: Path, rel: str) -> list[str]:
    """What ``path``, placed at ``rel`` in the tree, breaks of the rules above."""
    layer = layer_of(rel)
    imported = _imports(path)
    out = []
    forbidden = FORBIDDEN[layer] | (ENTRY_POINTS if layer != "entry" else set())
    bad = sorted(m for m in forbidden if any(_covers(m, n) for n in imported))
    if bad:
        out.append(f"{rel} imports {bad}, forbidden for the {layer!r} layer")
    if layer in CORE_INTERFACE:
        allowed = CORE_INTERFACE[layer]
        # a parent package of an allowed module (``from benchmark import registry``) is fine
        beyond = sorted(n for n in imported if _covers("benchmark", n)
                        and not any(_covers(a, n) or _covers(n, a) for a in allowed))
        if beyond:
            out.append(f"{rel} imports {beyond}; the {layer!r} layer may use only {sorted(allowed)}")
    for system, owners in OWNERS.items():
        if any(_covers(system, n) for n in imported) and not any(
                rel == o or (o.endswith("/") and rel.startswith(o)) for o in owners):
            out.append(f"{rel} imports {system}; only {sorted(owners)} may")
    return out


@pytest.mark.parametrize("path", _sources(), ids=_rel)
def test_layering(path: Path) -> None:
    assert violations(path, _rel(path)) == []


def test_every_file_has_a_layer_with_rules() -> None:
    assert set(LAYERS.values()) == set(FORBIDDEN) and set(CORE_INTERFACE) <= set(FORBIDDEN)
    assert all(layer_of(_rel(p)) is not None for p in _sources())
    assert {"bench", "bench.__main__", "benchmark.report"} <= ENTRY_POINTS
    assert layer_of("benchmark/report.py") == "entry" and layer_of("benchmark/train.py") == "benchmark"


def test_layering_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import methods.ms_sl\nfrom sweeps import runner\nimport mlflow\n")
    found = violations(bad, "benchmark/evaluate.py")
    assert len(found) == 2 and "['methods', 'sweeps']" in found[0] and "mlflow" in found[1]
    # entry points, literal dynamic imports and the core beyond a layer's interface are seen too
    bad.write_text("from benchmark import report\nimport importlib\n"
                   "importlib.import_module('reports.cli')\n__import__('bench.ms_sl')\n")
    found = violations(bad, "sweeps/objective.py")
    assert len(found) == 1 and all(m in found[0] for m in ("'bench'", "'benchmark.report'", "'reports'"))
    assert violations(bad, "bench/fake.py") == []
    bad.write_text("from benchmark import registry\nfrom benchmark.config import load_config\n")
    found = violations(bad, "methods/fake.py")
    assert len(found) == 1 and "['benchmark.config', 'benchmark.config.load_config']" in found[0]


def test_public_api_lists_every_lazy_name():
    import benchmark

    assert sorted(benchmark.__all__) == sorted([*benchmark._API, "create_method"])
    for name in benchmark.__all__:
        assert callable(getattr(benchmark, name)), name
