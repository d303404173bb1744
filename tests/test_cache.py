import subprocess
import sys

from urbanlib.cache import file_lock


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
