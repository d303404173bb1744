"""Every experiment notebook executes at smoke scale (papermill, one fresh cache shared by the module).

Order matters only for speed: the pretraining pages cache the encoders that later pages reuse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = [
    ("data.ipynb", {"city": "synth-ring"}),
    ("papers.ipynb", {}),
    ("pretrain_urbanclip.ipynb", {"city": "synth-ring"}),
    ("pretrain_urbanln.ipynb", {"city": "synth-ring", "imagery": "satellite"}),
    ("pretrain_urbanln.ipynb", {"city": "synth-ring", "imagery": "street"}),
    ("benchmark.ipynb", {"city": "synth-ring"}),
    ("captions.ipynb", {"city": "synth-ring", "n_images": 8}),
    ("ablations.ipynb", {"city": "synth-ring"}),
    ("verdicts.ipynb", {}),
    ("clusters.ipynb", {"city": "synth-ring", "umap": False}),
    ("similarity.ipynb", {"city": "synth-ring"}),
    ("transfer.ipynb", {}),
    ("efficiency.ipynb", {"batch_size": 8, "repeats": 2}),
    ("msd_sweeps.ipynb", {"city": "synth-ring", "noise_levels": [0.0, 2.0], "queue_fractions": [2.0]}),
    ("section35.ipynb", {"city": "synth-ring", "prompt_epochs": 20}),
]

NO_FIGURES = {"captions.ipynb", "verdicts.ipynb", "efficiency.ipynb"}  # tables only


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("urbanlib-cache")


@pytest.mark.notebooks
@pytest.mark.parametrize(("notebook", "params"), NOTEBOOKS,
                         ids=[f"{n.split('.')[0]}-{'-'.join(map(str, p.values()))}" for n, p in NOTEBOOKS])
def test_notebook_runs_at_smoke_scale(notebook, params, shared_cache, tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("URBANLIB_CACHE", str(shared_cache))
    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    out = tmp_path / notebook
    pm.execute_notebook(str(REPO / "notebooks" / notebook), str(out), parameters={**params, "scale": "smoke"},
                        kernel_name="python3", progress_bar=False, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type in ("execute_result", "display_data") for o in outputs)  # it showed something
    warnings = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr" and "Warning" in o.text]
    assert not warnings, f"warnings leaked into the page: {warnings[:2]}"
    # every cell tagged `figure` drew (issue 19: a Figure built but never displayed leaves an empty section)
    from urbanlib.book.reading import FIGURE_TAG, figures_without_image

    assert any(FIGURE_TAG in c.metadata.get("tags", []) for c in nb.cells) or notebook in NO_FIGURES, notebook
    assert not figures_without_image(nb), f"{notebook}: figure cells without an image: {figures_without_image(nb)}"


@pytest.mark.notebooks
def test_benchmark_notebook_runs_on_the_urbanclip_release_layout(tmp_path, monkeypatch):
    """`-p data_dir ... -p layout urbanclip`: models that lack inputs become n/a rows, the rest run."""
    import importlib.util

    import nbformat
    import papermill as pm

    spec = importlib.util.spec_from_file_location("uc_fixture", REPO / "tests/data/urbanclip/make_fixture.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    release = fixture.make(tmp_path / "release", image_size=64, xs=range(12659, 12665), ys=range(4736, 4741))
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    out = tmp_path / "benchmark.ipynb"
    pm.execute_notebook(str(REPO / "notebooks/benchmark.ipynb"), str(out), kernel_name="python3",
                        parameters={"city": "Beijing", "scale": "smoke", "data_dir": str(release),
                                    "layout": "urbanclip"},
                        progress_bar=False, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Beijing" in html and "UrbanCLIP" in html
    for reason in ("needs human-mobility flows", "no long captions", "no street images"):
        assert reason in html, reason  # the n/a rows say why


def test_benchmark_notebook_runs_only_the_models_asked_for(tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    out = tmp_path / "benchmark.ipynb"
    pm.execute_notebook(str(REPO / "notebooks/benchmark.ipynb"), str(out), kernel_name="python3",
                        parameters={"scale": "smoke", "models": ["PCA", "UrbanCLIP"]},
                        progress_bar=False, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    import pandas as pd

    rows = pd.read_csv(tmp_path / "cache" / "results" / "benchmark-synth-ring-smoke-random.csv")
    assert set(rows["model"]) == {"PCA", "UrbanCLIP"}
