import os
import re
import subprocess
import sys

import numpy as np
import pytest

from urbanlib import provenance
from urbanlib.cache import REPO_ROOT, atomic_write, file_lock


def test_a_held_lock_refuses_a_second_holder_that_will_not_wait(tmp_path):
    path = tmp_path / "x.lock"
    with file_lock(path) as held:
        assert held is True
        with file_lock(path, wait=False) as second:
            assert second is False
    with file_lock(path, wait=False) as again:  # released at the end of the block
        assert again is True


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "x.lock"
    code = ("import sys, time; from urbanlib.cache import file_lock\n"
            f"with file_lock({str(path)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with file_lock(path, wait=False) as held:
            assert held is False
    finally:
        proc.kill()
        proc.wait()
    with file_lock(path, wait=False) as held:
        assert held is True


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_puts_the_file_in_place_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    with atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and str(os.getpid()) in tmp.name and tmp.suffix == ".csv"
        tmp.write_text("a,b\n1,2\n")
        assert not path.exists()  # nothing at the final name until the block ends
    assert path.read_text() == "a,b\n1,2\n"
    assert _entries(tmp_path) == ["table.csv"]


def test_an_exception_mid_write_leaves_no_partial_file_and_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    with pytest.raises(RuntimeError, match="killed"), atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            f.write("a,b\n1,")
            raise RuntimeError("killed mid-write")
    assert _entries(tmp_path) == []
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old\n"  # the earlier file is left as it was
    assert _entries(tmp_path) == ["table.csv"]


def test_atomic_write_keeps_the_suffix_numpy_picks_its_format_by(tmp_path):
    path = tmp_path / "emb.npy"
    with atomic_write(path) as tmp:
        np.save(tmp, np.arange(3))  # np.save adds ".npy" to a name without it: the file would land elsewhere
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert _entries(tmp_path) == ["emb.npy"]


def test_atomic_write_replaces_a_folder_and_removes_a_failed_one(tmp_path):
    out = tmp_path / "city"
    out.mkdir()
    (out / "stale.txt").write_text("old build")
    with atomic_write(out) as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["images", "meta.json"]
    with pytest.raises(ValueError), atomic_write(out) as tmp:
        tmp.mkdir()
        (tmp / "meta.json").write_text("{half")
        raise ValueError
    assert (out / "meta.json").read_text() == "{}" and _entries(tmp_path) == ["city"]


def test_a_block_that_removes_its_temporary_replaces_nothing(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text("written by another process")
    with atomic_write(path) as tmp:
        tmp.write_text("mine")
        tmp.unlink()  # giving up
    assert path.read_text() == "written by another process" and _entries(tmp_path) == ["meta.json"]


def test_a_temporary_left_by_a_killed_process_with_this_pid_is_cleared(tmp_path):
    path = tmp_path / "city"
    with atomic_write(path) as tmp:
        pass
    tmp.mkdir()
    (tmp / "half.png").write_bytes(b"\x89PNG")  # a killed earlier run of this process id
    with atomic_write(path) as tmp2:
        assert tmp2 == tmp and not tmp2.exists()
        tmp2.mkdir()
    assert _entries(path) == [] and _entries(tmp_path) == ["city"]


def test_the_repository_root_is_defined_once():
    assert provenance.REPO_ROOT is REPO_ROOT and (REPO_ROOT / "urbanlib" / "cache.py").is_file()
    assert provenance.PACKAGE_ROOT == REPO_ROOT / "urbanlib"
    package = REPO_ROOT / "urbanlib"
    pattern = re.compile(r"parents\[2\]|\.parent\.parent\b|^\s*(REPO|REPO_ROOT|_REPO)\s*=", re.M)
    defined = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                     if pattern.search(p.read_text()))
    assert defined == ["cache.py"], f"the repository root computed outside urbanlib/cache.py: {defined}"
