"""Every module of the package has its own file name (``__init__.py`` and subcommand ``cli.py`` aside)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_NAMES = {"__init__.py", "cli.py"}  # package markers; ``cli.py`` is each subcommand's entry point


def test_module_file_names_are_distinct():
    places: dict[str, list[str]] = defaultdict(list)
    for package in ("radfm", "transforms"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name not in SHARED_NAMES:
                places[path.name].append(str(path.relative_to(ROOT)))
    assert places, "no modules found: wrong ROOT"
    repeated = {name: paths for name, paths in places.items() if len(paths) > 1}
    assert not repeated, f"module file names used more than once: {repeated}"


def test_engines_hold_no_datasets_networks_or_metrics():
    """``radfm.engines`` keeps engines: datasets live in radfm.data, networks in radfm.model, metrics in radfm.metrics."""
    import ast

    offenders = []
    for path in sorted((ROOT / "radfm" / "engines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "attr", getattr(b, "id", "")) for b in node.bases}
                if bases & {"Dataset", "Sampler", "DistributedSampler", "Metric", "Module"}:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({', '.join(sorted(bases))})")
    assert not offenders, f"move these out of radfm/engines: {offenders}"
