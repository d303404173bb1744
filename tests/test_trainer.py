"""Trainer, schedule, checkpoints (atomic, pickle-free, exact resume), bf16 autocast and DDP (gloo)."""

import csv
import json
import math

import pytest
import torch
import torch.multiprocessing as mp
from toy_training import ImageTextPairs, Linear, Points

from urbanlib.models import Vocab, create_model, load_trained
from urbanlib.train import TrainConfig, Trainer, latest_checkpoint, load_checkpoint, lr_at, save_checkpoint
from urbanlib.train import checkpoint as ckpt_mod

CAPTIONS = [[f"region {i} has a park", f"region {i} near the river", f"dense blocks around {i}"] for i in range(16)]



def _data(n=16):
    g = torch.Generator().manual_seed(1)
    return ImageTextPairs(torch.randn(n, 3, 32, 32, generator=g), CAPTIONS[:n], context_length=16)


def _model(data):
    torch.manual_seed(0)
    return create_model("urbanclip-tiny", vocab=Vocab.from_tokenized(data.all_tokens()), context_length=16)


def _cfg(**kw):
    base = dict(epochs=2, batch_size=4, lr=2e-3, warmup_steps=2, progress=False, seed=3)
    return TrainConfig(**{**base, **kw})


def test_lr_schedule():
    assert lr_at(0, 1.0, 4, 20) == pytest.approx(0.25)
    assert lr_at(3, 1.0, 4, 20) == pytest.approx(1.0)
    assert lr_at(4, 1.0, 4, 20) == pytest.approx(1.0)
    assert lr_at(12, 1.0, 4, 20) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_at(20, 1.0, 4, 20, min_ratio=0.1) == pytest.approx(0.1)


def test_deterministic_by_seed_and_logs_csv(tmp_path):
    runs = []
    for name in ("a", "b"):
        data = _data()
        tr = Trainer(_model(data), data, _cfg(epochs=1), tmp_path / name)
        runs.append([r["loss"] for r in tr.fit()])
    assert runs[0] == runs[1] and len(runs[0]) == 4
    with (tmp_path / "a" / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {"contrastive_loss", "caption_loss", "loss", "lr"} <= set(rows[0])
    assert float(rows[0]["loss"]) == pytest.approx(runs[0][0])


def test_resume_after_interruption_reproduces_straight_run(tmp_path):
    data = _data()
    straight = Trainer(_model(data), data, _cfg(), tmp_path / "straight")
    losses_straight = [r["loss"] for r in straight.fit()]  # 2 epochs x 4 steps
    data = _data()
    first = Trainer(_model(data), data, _cfg(max_steps=3), tmp_path / "resumed")
    losses_a = [r["loss"] for r in first.fit()]  # stops mid-epoch at step 3 and checkpoints
    data = _data()
    second = Trainer(_model(data), data, _cfg(), tmp_path / "resumed")
    second.model.apply(lambda m: [p.data.normal_() for p in m.parameters(recurse=False)])  # garbage before resume
    losses_b = [r["loss"] for r in second.fit()]
    assert second.step == 8 and len(losses_b) == 5
    assert losses_a + losses_b == losses_straight
    for (n, p), q in zip(straight.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    with (tmp_path / "resumed" / "losses.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 9))


def test_kill_mid_write_keeps_latest_valid_and_loading_never_unpickles(tmp_path, monkeypatch):
    data = _data()
    tr = Trainer(_model(data), data, _cfg(max_steps=2), tmp_path)
    tr.fit()
    good = latest_checkpoint(tmp_path)
    assert good.name == "step-00000002"
    real = ckpt_mod.save_file
    calls = {"n": 0}

    def dying_save_file(tensors, path):
        calls["n"] += 1
        if calls["n"] == 2:  # die after model.safetensors, before optimizer/state
            raise KeyboardInterrupt("killed")
        real(tensors, path)

    monkeypatch.setattr(ckpt_mod, "save_file", dying_save_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, tr.model, tr.optimizer, {})
    assert latest_checkpoint(tmp_path) == good
    assert not (tmp_path / "step-00000003").exists()
    monkeypatch.setattr(ckpt_mod, "save_file", real)
    save_checkpoint(tmp_path, 3, tr.model, tr.optimizer, {})  # the next save clears the half-written dir
    assert not list(tmp_path.glob(".tmp-*")) and latest_checkpoint(tmp_path).name == "step-00000003"
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": good.name, "step": 2}))

    def no_pickle(*a, **k):
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    fresh = _model(data)
    state = load_checkpoint(good, fresh)
    assert state["step"] == 2 and state["model_config"]["context_length"] == 16
    assert torch.equal(fresh.logit_scale, tr.model.logit_scale)
    assert json.loads((tmp_path / "latest.json").read_text())["checkpoint"] == "step-00000002"
    rebuilt = load_trained(good)  # config + restricted vocab + weights, no pickle
    assert torch.equal(rebuilt.kept_ids, tr.model.kept_ids)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), tr.model.state_dict().values(),
                                                 strict=True))


def test_after_optimizer_step_hook_is_called(tmp_path):
    data = _data()
    model = _model(data)
    seen = []
    model.after_optimizer_step = seen.append
    Trainer(model, data, _cfg(epochs=1), tmp_path).fit()
    assert seen == [0, 1, 2, 3]


def test_bf16_cpu_autocast_tracks_fp32(tmp_path):
    out = {}
    for prec in ("fp32", "bf16"):
        data = _data()
        tr = Trainer(_model(data), data, _cfg(epochs=1, precision=prec), tmp_path / prec)
        out[prec] = [r["loss"] for r in tr.fit()]
    rel = [abs(a - b) / a for a, b in zip(out["fp32"], out["bf16"], strict=True)]
    assert max(rel) < 0.02, rel  # stated tolerance: 2 % relative on every step's loss over 4 steps
    assert out["fp32"] != out["bf16"]  # autocast really ran in bf16


def test_bad_config_errors(tmp_path):
    data = _data()
    with pytest.raises(ValueError, match="precision"):
        Trainer(_model(data), data, _cfg(precision="fp8"), tmp_path)
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(_model(data), data, _cfg(batch_size=32), tmp_path)


# ---- DDP (gloo, 2 CPU processes) ---------------------------------------------------------------

def _grads(model, batch):
    model.zero_grad()
    model(batch)["loss"].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _ddp_worker(rank, world, tmp):
    import os

    from safetensors.torch import save_file

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    # rendezvous through a file, not a port: a free port picked up front can be taken before the workers start
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        data = _data()
        model = _model(data)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        batch = {k: v[rank * 4:(rank + 1) * 4] for k, v in _global_batch(data).items()}
        ddp.zero_grad()
        ddp(batch)["loss"].backward()
        save_file({n: p.grad for n, p in model.named_parameters()}, f"{tmp}/grads{rank}.safetensors")
        tr = Trainer(_model(data), data, _cfg(epochs=1), f"{tmp}/run")  # global batch 4 -> 2 per rank
        tr.fit()
        if rank == 0:
            save_file(dict(tr.model.state_dict()), f"{tmp}/trained.safetensors")
            with open(f"{tmp}/history.json", "w") as f:
                json.dump(tr.history, f)
    finally:
        torch.distributed.destroy_process_group()


def _global_batch(data):
    items = [data[i] for i in range(8)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@pytest.mark.slow  # ~40 s here: two spawned interpreters importing torch/open_clip
def test_ddp_gloo_two_processes_match_single_process(tmp_path):
    from safetensors.torch import load_file

    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    data = _data()
    ref = _grads(_model(data), _global_batch(data))
    for r in range(2):
        got = load_file(str(tmp_path / f"grads{r}.safetensors"))
        for n, g in ref.items():
            assert torch.allclose(got[n], g, atol=2e-6, rtol=1e-4), (r, n, (got[n] - g).abs().max())
    single = Trainer(_model(data), data, _cfg(epochs=1), tmp_path / "single")
    single.fit()
    trained = load_file(str(tmp_path / "trained.safetensors"))
    for n, p in single.model.state_dict().items():
        q = trained[n]
        if n.endswith("in_proj_bias"):  # the key bias has an exactly-zero true gradient (softmax is
            w = p.shape[0] // 3  # shift-invariant); Adam turns float noise there into full steps
            p, q = torch.cat([p[:w], p[2 * w:]]), torch.cat([q[:w], q[2 * w:]])
        # equal gradients up to float summation order; Adam magnifies ~1e-7 differences on tiny
        # gradients, so after 4 steps at lr 2e-3 allow 1e-4 (5 % of one step)
        assert torch.allclose(q, p, atol=1e-4), (n, (q - p).abs().max())
    ddp_history = json.loads((tmp_path / "history.json").read_text())
    for a, b in zip(ddp_history, single.history, strict=True):  # logged values are global-batch values
        for key in ("loss", "contrastive_loss", "caption_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (key, a, b)
    assert math.isfinite(single.history[-1]["loss"])


# ---- validation, early stopping, plateau schedule ------------------------------------------------
_Linear, _Points = Linear, Points  # y = w x + b: converges in a few dozen steps, then plateaus


def _es_cfg(**kw):
    base = dict(max_steps=400, batch_size=8, lr=0.05, warmup_steps=2, progress=False, seed=1, evals_per_epoch=2,
                patience=5, schedule="plateau", checkpoint_every=7, weight_decay=0.0)
    return TrainConfig(**{**base, **kw})


def _val_rows(path):
    with (path / "val.csv").open() as f:
        return list(csv.DictReader(f))


def test_early_stopping_stops_on_a_plateau_and_keeps_the_best_weights(tmp_path):
    tr = Trainer(_Linear(), _Points(64, 0), _es_cfg(), tmp_path, val_dataset=_Points(24, 1))
    tr.fit()
    st = tr.stop
    assert st.stopped_by == "patience" and st.finished
    assert tr.step < 400  # stopped well before the cap
    rows = _val_rows(tmp_path)
    steps = [int(r["step"]) for r in rows]
    assert steps[0] == 0 and steps == sorted(steps) and all(b - a == 4 for a, b in zip(steps, steps[1:], strict=False))  # 8 steps/epoch
    vals = [float(r["val_loss"]) for r in rows]
    best = min(range(len(vals)), key=vals.__getitem__)
    assert steps[best] == st.best_step and vals[best] == pytest.approx(st.best_val)
    # patience: 5 evaluations, but at least 2 epochs = 4 evaluations at 2 per epoch -> 5; the run ran them
    assert tr.patience == 5 and (tr.step - st.best_step) // tr.eval_interval >= tr.patience
    # the plateau schedule cut the lr before stopping
    assert float(rows[-1]["lr_scale"]) < 1.0 and tr.history[-1]["lr"] < 0.05
    # the model holds the best evaluation's weights, and its validation loss is the best one
    assert tr.evaluate() == pytest.approx(st.best_val, rel=1e-6)


def test_patience_spans_at_least_two_epochs(tmp_path):
    tr = Trainer(_Linear(), _Points(64, 0), _es_cfg(evals_per_epoch=8, patience=5), tmp_path, val_dataset=_Points(24, 1))
    assert tr.eval_interval == 1 and tr.patience == 16  # 2 epochs of 8 evaluations each


def test_early_stopped_run_resumes_to_the_same_stop_and_is_not_rewritten(tmp_path):
    straight = Trainer(_Linear(), _Points(64, 0), _es_cfg(), tmp_path / "a", val_dataset=_Points(24, 1))
    straight.fit()

    class Killed(Exception):
        pass

    model = _Linear()
    calls = {"n": 0}

    def die_at_step_23(step):
        calls["n"] += 1
        if step == 22:  # 0-based index: after the checkpoint at 21, before the one at 28
            raise Killed

    model.after_optimizer_step = die_at_step_23
    first = Trainer(model, _Points(64, 0), _es_cfg(), tmp_path / "b", val_dataset=_Points(24, 1))
    with pytest.raises(Killed):
        first.fit()
    del model.after_optimizer_step
    second = Trainer(_Linear(), _Points(64, 0), _es_cfg(), tmp_path / "b", val_dataset=_Points(24, 1))
    second.fit()
    assert second.step == straight.step and second.stop == straight.stop
    assert _val_rows(tmp_path / "a") == _val_rows(tmp_path / "b")  # no duplicate or stale validation rows
    for p, q in zip(straight.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    final = latest_checkpoint(tmp_path / "b")
    mtime = (final / "model.safetensors").stat().st_mtime_ns
    again = Trainer(_Linear(), _Points(64, 0), _es_cfg(), tmp_path / "b", val_dataset=_Points(24, 1))
    assert again.fit() == [] and again.step == straight.step
    assert (final / "model.safetensors").stat().st_mtime_ns == mtime  # a finished run is not rewritten


def test_validation_does_not_change_the_training_stream(tmp_path):
    plain = Trainer(_Linear(), _Points(64, 0), _es_cfg(max_steps=12, patience=0, evals_per_epoch=0,
                                                      schedule="cosine"), tmp_path / "a")
    with_val = Trainer(_Linear(), _Points(64, 0), _es_cfg(max_steps=12, patience=0, schedule="cosine",
                                                         restore_best=False), tmp_path / "b",
                       val_dataset=_Points(24, 1))
    assert [r["loss"] for r in plain.fit()] == [r["loss"] for r in with_val.fit()]
    assert with_val.stop.stopped_by == "cap" and len(_val_rows(tmp_path / "b")) == 1 + 12 // 4


def test_validation_settings_need_a_val_dataset_and_a_known_key(tmp_path):
    with pytest.raises(ValueError, match="val_dataset"):
        Trainer(_Linear(), _Points(64, 0), _es_cfg(), tmp_path)
    with pytest.raises(ValueError, match="schedule"):
        Trainer(_Linear(), _Points(64, 0), _es_cfg(schedule="step"), tmp_path, val_dataset=_Points(24, 1))
    tr = Trainer(_Linear(), _Points(64, 0), _es_cfg(val_key="nope"), tmp_path, val_dataset=_Points(24, 1))
    with pytest.raises(KeyError, match="nope"):
        tr.fit()


def test_old_checkpoints_are_pruned_and_snapshots_kept_at_each_evaluation(tmp_path):
    tr = Trainer(_Linear(), _Points(64, 0), _es_cfg(max_steps=30, patience=0, checkpoint_every=5, snapshots=True,
                                                   keep_checkpoints=2), tmp_path, val_dataset=_Points(24, 1))
    tr.fit()
    steps = sorted(p.name for p in tmp_path.glob("step-*"))
    assert steps == ["step-00000025", "step-00000030"]  # the newest two
    snaps = sorted(p.name for p in (tmp_path / "snapshots").glob("step-*.safetensors"))
    assert snaps == [f"step-{s:08d}.safetensors" for s in range(0, 31, 4)]


def test_evaluations_during_warmup_do_not_count_against_patience(tmp_path):
    # lr so large that the loss rises while it warms up: without the rule the run would stop at once
    cfg = _es_cfg(lr=3.0, warmup_steps=40, patience=5, max_steps=60, schedule="cosine")
    tr = Trainer(_Linear(), _Points(64, 0), cfg, tmp_path, val_dataset=_Points(24, 1))
    tr.fit()
    assert tr.step > 40  # it ran past the warmup: the 10 evaluations inside it did not end it


class _NormedLinear(torch.nn.Module):
    """A BatchNorm in front of the toy regression: its eval-mode output depends on the running statistics."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bn = torch.nn.BatchNorm1d(4)
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, batch):
        err = self.lin(self.bn(batch["x"])).squeeze(-1) - batch["y"]
        return {"loss": (err ** 2).mean()}


class _Shifted(Points):
    """Toy points whose inputs sit far from BatchNorm's initial statistics (mean 0, variance 1)."""

    def __init__(self, n, seed):
        super().__init__(n, seed)
        self.x = 50.0 + 3.0 * self.x


def test_precise_bn_sets_running_statistics_to_the_training_batches_mean(tmp_path):
    data = _Shifted(64, 0)
    cfg = _es_cfg(max_steps=3, patience=0, schedule="cosine", precise_bn_batches=2, checkpoint_every=0)
    tr = Trainer(_NormedLinear(), data, cfg, tmp_path, val_dataset=_Shifted(24, 1))
    tr.fit()  # evaluates at step 0 and at the cap (3 steps < the eval interval of 4: only step 0 and the end)
    tr._precise_bn()
    order = tr._epoch_order(0)
    x = torch.stack([data[int(i)]["x"] for i in order[:16]])
    assert torch.allclose(tr.model.bn.running_mean, x.mean(0), atol=1e-5)  # momentum 0.1 would hold ~0.27 x the mean
    assert tr.model.bn.momentum == 0.1  # the module's own momentum is put back


def test_precise_bn_makes_a_short_runs_validation_loss_follow_training(tmp_path):
    def final_val(precise):
        cfg = _es_cfg(max_steps=8, patience=0, schedule="cosine", precise_bn_batches=precise, lr=0.2,
                      restore_best=False)
        tr = Trainer(_NormedLinear(), _Shifted(64, 0), cfg, tmp_path / str(precise), val_dataset=_Shifted(24, 1))
        tr.fit()
        return tr.evaluate()

    # after 8 steps at momentum 0.1 the running mean holds ~0.57 x 50: the eval-mode loss is inflated ~5x; precise is not
    assert final_val(8) < 0.5 * final_val(0)


def test_precise_bn_is_a_no_op_without_batchnorm_and_leaves_the_training_stream_alone(tmp_path):
    a = Trainer(_Linear(), _Points(64, 0), _es_cfg(max_steps=12, patience=0, schedule="cosine",
                                                   precise_bn_batches=0), tmp_path / "a", val_dataset=_Points(24, 1))
    b = Trainer(_Linear(), _Points(64, 0), _es_cfg(max_steps=12, patience=0, schedule="cosine"), tmp_path / "b",
                val_dataset=_Points(24, 1))
    assert [r["loss"] for r in a.fit()] == [r["loss"] for r in b.fit()]
    c = Trainer(_NormedLinear(), _Shifted(64, 0), _es_cfg(max_steps=12, patience=0, schedule="cosine",
                                                         evals_per_epoch=0, restore_best=False), tmp_path / "c")
    d = Trainer(_NormedLinear(), _Shifted(64, 0), _es_cfg(max_steps=12, patience=0, schedule="cosine",
                                                         restore_best=False), tmp_path / "d",
                val_dataset=_Shifted(24, 1))
    assert [r["loss"] for r in c.fit()] == [r["loss"] for r in d.fit()]  # re-estimating never moves the weights
