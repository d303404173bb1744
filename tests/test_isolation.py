"""A test run writes nothing into the repository: its cache, results and tool caches live elsewhere."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _in_repo(path) -> bool:
    return Path(path).resolve().is_relative_to(REPO)


def test_a_test_runs_cache_and_results_are_not_the_repos():
    from urbanlib.cache import cache_root
    from urbanlib.pipeline.hparams import selected_path
    from urbanlib.pipeline.runs import archive_dir
    from urbanlib.results.store import results_path, results_root

    for where in (cache_root(), results_root(), results_path("benchmark"), selected_path(), archive_dir()):
        assert not _in_repo(where), where


def test_the_results_folder_is_read_when_used_not_at_import(tmp_path, monkeypatch):
    from urbanlib.results.store import append_rows, read_results, results_root

    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path))  # after the store was imported
    assert results_root() == tmp_path
    row = {"city": "c", "model": "m", "task": "t", "metric": "R2", "value": 1.0}
    append_rows("x", "u", [row], {}, 0, "smoke", 1.0)
    assert (tmp_path / "x.csv").is_file() and len(read_results("x")) == 1


def test_the_committed_tier_is_opt_in(committed_results):
    from urbanlib.results.store import results_root

    assert results_root() == REPO / "results" == committed_results


def test_hypothesis_stores_nothing_in_the_repo():
    from hypothesis.configuration import storage_directory

    assert not _in_repo(storage_directory("examples", intent_to_write=False).path)


def test_pytest_keeps_no_cache_folder(pytestconfig):
    args = pytestconfig.getini("addopts")
    assert any(a == "-p" and b == "no:cacheprovider" for a, b in zip(args, args[1:], strict=False))
