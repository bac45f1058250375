"""The import table of docs/architecture.md §1, checked with ast over the source tree."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "benchmark": {"methods", "sweeps", "reports"},
    "methods": {"sweeps", "reports", "mlflow", "optuna"},
    "sweeps": {"reports"},
    "reports": {"methods", "sweeps"},
}
# modules allowed one specific back-edge (architecture §1): the report shim
EXCEPTIONS = {("benchmark/report.py", "reports")}
# external systems with one owner each
OWNERS = {
    "mlflow": {"benchmark/tracking.py"},
    "rich": {"benchmark/console.py", "reports/"},
    "optuna": {"sweeps/", "reports/"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _sources():
    for package in FORBIDDEN:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("package,path", list(_sources()), ids=lambda x: _rel(x) if isinstance(x, Path) else x)
def test_layering(package: str, path: Path) -> None:
    rel = _rel(path)
    imported = _imports(path)
    bad = {m for m in imported & FORBIDDEN[package] if (rel, m) not in EXCEPTIONS}
    assert not bad, f"{rel} imports {sorted(bad)}, forbidden for package {package!r}"
    for system, owners in OWNERS.items():
        if system in imported:
            assert any(rel == o or (o.endswith("/") and rel.startswith(o)) for o in owners), (
                f"{rel} imports {system}; only {sorted(owners)} may")


def test_layering_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import methods.ms_sl\nfrom sweeps import runner\n")
    assert {"methods", "sweeps"} <= _imports(bad)
