"""Every experiment notebook executes at smoke scale (papermill, a fresh cache shared by the run)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = [
    ("pretrain_urbanclip.ipynb", {"city": "synth-ring"}),
    ("pretrain_urbanln.ipynb", {"city": "synth-ring", "imagery": "satellite"}),
    ("pretrain_urbanln.ipynb", {"city": "synth-delta", "imagery": "street"}),
]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("urbanlib-cache")


@pytest.mark.notebooks
@pytest.mark.parametrize(("notebook", "params"), NOTEBOOKS, ids=[f"{n}-{'-'.join(map(str, p.values()))}"
                                                                   for n, p in NOTEBOOKS])
def test_notebook_runs_at_smoke_scale(notebook, params, shared_cache, tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("URBANLIB_CACHE", str(shared_cache))
    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    out = tmp_path / notebook
    pm.execute_notebook(str(REPO / "notebooks" / notebook), str(out), parameters={**params, "scale": "smoke"},
                        kernel_name="python3", progress_bar=False, cwd=str(REPO / "notebooks"))
    import nbformat

    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    stderr = [o.text for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "stream" and o.name == "stderr" and "Warning" in o.text]
    assert not stderr, f"warnings leaked into the page: {stderr[:2]}"
