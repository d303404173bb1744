"""Trainer faults: a real SIGKILL, half-written logs, resuming under another config, damaged checkpoints.

Issue 18 (training resume): the log is rewritten from the checkpoint's step, a differing config is
an error naming the fields, a finished run is not rewritten, every checkpoint file's sha256 is
checked on load, and ``latest.json`` never points at a missing folder, wherever a kill lands.
"""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from toy_training import Linear, Points

from urbanlib.train import TrainConfig, Trainer, latest_checkpoint, load_checkpoint, save_checkpoint
from urbanlib.train import checkpoint as ckpt_mod
from urbanlib.train.checkpoint import CheckpointError

CFG = dict(max_steps=60, batch_size=8, lr=0.05, warmup_steps=2, progress=False, seed=1, evals_per_epoch=2,
           patience=5, schedule="plateau", checkpoint_every=7, weight_decay=0.0)
HERE = os.path.dirname(os.path.abspath(__file__))  # toy_training.py: the same model here and in the killed process

KILLER = '''
import os, signal, sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads(1)
from toy_training import Linear, Points
CFG = {cfg!r}
from urbanlib.train import TrainConfig, Trainer

kill_at = int(sys.argv[2])
model = Linear()
model.after_optimizer_step = lambda step: step == kill_at and os.kill(os.getpid(), signal.SIGKILL)  # after row kill_at
Trainer(model, Points(64, 0), TrainConfig(**CFG), sys.argv[1], val_dataset=Points(24, 1)).fit()
'''


def _cfg(**kw):
    return TrainConfig(**{**CFG, **kw})


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _trainer(out, **kw):
    return Trainer(Linear(), Points(64, 0), _cfg(**kw), out, val_dataset=Points(24, 1))


def _assert_same_run(a, b, out_a, out_b):
    assert b.step == a.step and b.stop == a.stop
    assert _rows(out_a / "losses.csv") == _rows(out_b / "losses.csv")
    assert _rows(out_a / "val.csv") == _rows(out_b / "val.csv")
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_resume_after_real_sigkill_logs_every_step_once(tmp_path):
    straight = _trainer(tmp_path / "straight")
    straight.fit()
    script = tmp_path / "killed.py"
    script.write_text(KILLER.format(here=HERE, cfg=CFG))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "killed"
    for kill_at in (10, 25):  # the second process resumes from step 7, checkpoints at 14 and 21, dies at 25
        proc = subprocess.run([sys.executable, str(script), str(run), str(kill_at)], env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == -9, proc.stderr[-2000:]  # really SIGKILLed
        steps = [int(r["step"]) for r in _rows(run / "losses.csv")]
        assert steps[-1] == kill_at  # it logged past its last checkpoint before dying
        assert latest_checkpoint(run).is_dir()
    assert latest_checkpoint(run).name == "step-00000021"
    resumed = _trainer(run)
    resumed.fit()
    steps = [int(r["step"]) for r in _rows(run / "losses.csv")]
    assert steps == list(range(1, straight.step + 1))  # no duplicate and no missing step
    _assert_same_run(straight, resumed, tmp_path / "straight", run)


def test_a_half_written_last_line_is_dropped_on_resume(tmp_path):
    straight = _trainer(tmp_path / "a", max_steps=20)
    straight.fit()

    class Killed(Exception):
        pass

    model = Linear()

    def die(step):
        if step == 16:
            raise Killed

    model.after_optimizer_step = die
    with pytest.raises(Killed):
        Trainer(model, Points(64, 0), _cfg(max_steps=20), tmp_path / "b", val_dataset=Points(24, 1)).fit()
    with (tmp_path / "b" / "losses.csv").open("a") as f:
        f.write("2")  # what a SIGKILL in the middle of writing the row of step 2x leaves
    with (tmp_path / "b" / "val.csv").open("a") as f:
        f.write("1")
    second = _trainer(tmp_path / "b", max_steps=20)
    second.fit()
    _assert_same_run(straight, second, tmp_path / "a", tmp_path / "b")


def test_resume_with_another_config_names_the_differing_fields(tmp_path):
    _trainer(tmp_path, max_steps=7).fit()
    with pytest.raises(CheckpointError, match=r"batch_size: checkpoint 8, now 16") as e:
        _trainer(tmp_path, max_steps=20, batch_size=16).fit()
    assert str(e.value).count("checkpoint ") == 1  # only the field that differs
    with pytest.raises(CheckpointError) as e:
        _trainer(tmp_path, max_steps=20, lr=0.01, seed=2).fit()
    assert "lr: checkpoint 0.05, now 0.01" in str(e.value) and "seed: checkpoint 1, now 2" in str(e.value)
    with pytest.raises(CheckpointError, match="samples"):
        Trainer(Linear(), Points(48, 0), _cfg(max_steps=20), tmp_path, val_dataset=Points(24, 1)).fit()
    # nothing was written by the refused resumes
    assert [int(r["step"]) for r in _rows(tmp_path / "losses.csv")] == list(range(1, 8))
    # storage and progress fields may differ, and so may the cap
    ok = _trainer(tmp_path, max_steps=9, progress=True, keep_checkpoints=3, snapshots=True, num_threads=1,
                  checkpoint_every=3)
    assert len(ok.fit()) == 2 and ok.step == 9
    torch.set_num_threads(1)


def test_a_finished_run_is_not_rewritten(tmp_path):
    _trainer(tmp_path, max_steps=14).fit()
    final = latest_checkpoint(tmp_path)
    files = [final / "model.safetensors", final / "state.json", tmp_path / "latest.json", tmp_path / "losses.csv",
             tmp_path / "val.csv"]
    before = [(p.stat().st_mtime_ns, p.read_bytes()) for p in files]
    again = _trainer(tmp_path, max_steps=14)
    assert again.fit() == [] and again.step == 14 and again.stop.finished
    assert [(p.stat().st_mtime_ns, p.read_bytes()) for p in files] == before


def _flip_byte(path, offset_from_end=3):
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_checkpoint_files_carry_a_sha256_and_a_flipped_byte_is_refused(tmp_path, name):
    tr = _trainer(tmp_path, max_steps=7)
    tr.fit()
    ck = latest_checkpoint(tmp_path)
    pointer = json.loads((tmp_path / "latest.json").read_text())
    assert set(pointer["sha256"]) == {"model.safetensors", "optimizer.safetensors", "state.json"}
    assert pointer["sha256"] == json.loads((ck / "sha256.json").read_text())
    load_checkpoint(ck, Linear())  # intact: loads
    target = ck / name
    if name == "state.json":
        target.write_text(target.read_text().replace('"lr": 0.05', '"lr": 0.06', 1))
    else:
        _flip_byte(target)  # inside the tensor data: safetensors itself would load it silently
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(ck, Linear())
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        _trainer(tmp_path, max_steps=14).fit()


def test_checkpoints_without_checksums_still_load(tmp_path):
    tr = _trainer(tmp_path, max_steps=7)
    tr.fit()
    ck = latest_checkpoint(tmp_path)
    (ck / "sha256.json").unlink()
    pointer = json.loads((tmp_path / "latest.json").read_text())
    del pointer["sha256"]
    (tmp_path / "latest.json").write_text(json.dumps(pointer))
    assert load_checkpoint(ck, Linear())["step"] == 7


@pytest.mark.parametrize("kill_at_replace", [1, 2, 3])
def test_latest_never_points_at_a_missing_folder_when_a_step_is_rewritten(tmp_path, monkeypatch, kill_at_replace):
    tr = _trainer(tmp_path, max_steps=3, evals_per_epoch=0, patience=0, schedule="cosine")
    tr.val_dataset = None
    tr.eval_interval = 0
    tr.fit()
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    real = os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == kill_at_replace:  # 1: old copy aside, 2: new copy in place, 3: the pointer
            raise KeyboardInterrupt("killed")
        real(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, tr.model, tr.optimizer, {"again": True})
    monkeypatch.setattr(ckpt_mod.os, "replace", real)
    found = latest_checkpoint(tmp_path)
    assert found.is_dir()
    assert load_checkpoint(found, Linear())["step"] == 3  # whole and matching its checksums
    save_checkpoint(tmp_path, 3, tr.model, tr.optimizer, {})  # the next save tidies up
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    assert not list(tmp_path.glob(".old-*")) and not list(tmp_path.glob(".tmp-*"))
