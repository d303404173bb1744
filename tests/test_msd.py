"""Momentum self-distillation (UrbanLN Eq. 3-6): loss terms, EMA, queue."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from urbanlib.models.msd import (
    FeatureQueue,
    MomentumSelfDistillation,
    effective_queue_size,
    msd_loss,
)


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def dot(a, b):
    return float((a * b).sum())


def test_hand_computed_teacher_differs():
    tau_inv = 2.0  # exp(logit_scale)
    v = unit([1.0, 0.2], [0.1, 1.0])  # student images
    t = unit([0.9, 0.3], [0.3, 0.8])  # student texts
    vm = unit([1.0, 0.5], [0.2, 1.0])  # teacher images
    tm = unit([0.8, 0.1], [0.1, 0.9])  # teacher texts
    region = torch.tensor([10, 11])
    queue = FeatureQueue(size=2, dim=2).double()
    # slot 0: another region (a true negative); slot 1: region 10 (masked for query 0 only)
    queue.enqueue(unit([0.5, 0.5], [0.9, 0.1]), unit([0.6, 0.4], [1.0, 0.0]), torch.tensor([12, 10]))
    mu = 0.5
    out = msd_loss(v, t, torch.tensor(math.log(tau_inv), dtype=torch.float64), region, vm, tm, queue, mu)

    cand_t = [tm[0], tm[1], queue.text[0], queue.text[1]]
    cand_v = [vm[0], vm[1], queue.image[0], queue.image[1]]
    cand_r = [10, 11, 12, 10]
    lc, ld = 0.0, 0.0
    for i in range(2):
        keep = [k for k in range(4) if k == i or cand_r[k] != int(region[i])]
        p_i2t = softmax([tau_inv * dot(v[i], cand_t[k]) for k in keep])
        p_t2i = softmax([tau_inv * dot(t[i], cand_v[k]) for k in keep])
        q_i2t = softmax([tau_inv * dot(vm[i], cand_t[k]) for k in keep])
        q_t2i = softmax([tau_inv * dot(tm[i], cand_v[k]) for k in keep])
        pos = keep.index(i)
        lc += -(math.log(p_i2t[pos]) + math.log(p_t2i[pos])) / (2 * 2)
        kl1 = sum(q * math.log(q / p) for q, p in zip(q_i2t, p_i2t, strict=True))
        kl2 = sum(q * math.log(q / p) for q, p in zip(q_t2i, p_t2i, strict=True))
        ld += 0.5 * (kl1 + kl2) / 2
    assert out["contrastive_loss"].item() == pytest.approx(lc, rel=1e-9)
    assert out["distill_loss"].item() == pytest.approx(ld, rel=1e-9)
    assert out["distill_loss"].item() > 1e-4  # teacher != student
    assert out["loss"].item() == pytest.approx((1 - mu) * lc + mu * ld, rel=1e-9)
    assert out["n_candidates"].item() == 4
    assert out["n_masked"].item() == pytest.approx(0.5)  # one masked slot for query 0, none for query 1


def test_kl_zero_when_teacher_is_student():
    torch.manual_seed(0)
    v, t = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    queue = FeatureQueue(6, 8)
    queue.enqueue(
        F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1), torch.arange(5) + 100
    )
    out = msd_loss(v, t, torch.tensor(math.log(1 / 0.07)), torch.arange(4), v, t, queue, mu=0.5)
    assert out["distill_loss"].abs().item() < 1e-6
    assert out["loss"].item() == pytest.approx(0.5 * out["contrastive_loss"].item(), abs=1e-6)


def test_mu_zero_is_queue_contrastive():
    torch.manual_seed(1)
    v, t = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    vm, tm = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    queue = FeatureQueue(4, 4)
    qi, qt = F.normalize(torch.randn(4, 4), dim=1), F.normalize(torch.randn(4, 4), dim=1)
    queue.enqueue(qi, qt, torch.tensor([7, 8, 9, 10]))  # no region overlaps the batch
    scale = torch.tensor(math.log(5.0))
    out = msd_loss(v, t, scale, torch.arange(3), vm, tm, queue, mu=0.0)
    labels = torch.arange(3)
    expect = 0.5 * (
        F.cross_entropy(5.0 * v @ torch.cat([tm, qt]).T, labels)
        + F.cross_entropy(5.0 * t @ torch.cat([vm, qi]).T, labels)
    )
    torch.testing.assert_close(out["loss"], expect)
    torch.testing.assert_close(out["contrastive_loss"], expect)


def test_no_teacher_mu_zero_is_plain_clip():
    torch.manual_seed(2)
    v = F.normalize(torch.randn(5, 6), dim=1).requires_grad_()
    t = F.normalize(torch.randn(5, 6), dim=1)
    scale = torch.tensor(math.log(1 / 0.07))
    out = msd_loss(v, t, scale, torch.arange(5), mu=0.0)
    ref = ClipLoss()(v, t, scale.exp())
    torch.testing.assert_close(out["loss"], ref)
    assert out["distill_loss"].item() == 0.0
    out["loss"].backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        msd_loss(v, t, scale, torch.arange(5), mu=0.5)


def test_same_region_masking():
    torch.manual_seed(3)
    v, t = F.normalize(torch.randn(1, 4), dim=1), F.normalize(torch.randn(1, 4), dim=1)
    scale = torch.tensor(math.log(10.0))
    region = torch.tensor([0])
    other_i, other_t = F.normalize(torch.randn(1, 4), dim=1), F.normalize(torch.randn(1, 4), dim=1)

    def loss_with_duplicate_region(dup_region: int) -> torch.Tensor:
        # The queue holds an exact copy of the query's pair (a hard false negative) plus one other region.
        q = FeatureQueue(2, 4)
        q.enqueue(torch.cat([v, other_i]), torch.cat([t, other_t]), torch.tensor([dup_region, 5]))
        return msd_loss(v, t, scale, region, v, t, q, mu=0.0)["loss"]

    q_without = FeatureQueue(2, 4)
    q_without.enqueue(other_i, other_t, torch.tensor([5]))  # slot 1 stays empty (masked)
    reference = msd_loss(v, t, scale, region, v, t, q_without, mu=0.0)["loss"]
    torch.testing.assert_close(loss_with_duplicate_region(0), reference)  # same region: masked
    assert loss_with_duplicate_region(9).item() > reference.item() + 0.1  # other region: a negative

    # Unmasked (the plain queue): the stale copy is a negative and is counted as a false negative.
    q = FeatureQueue(2, 4)
    q.enqueue(torch.cat([v, other_i]), torch.cat([t, other_t]), torch.tensor([0, 5]))
    unmasked = msd_loss(v, t, scale, region, v, t, q, mu=0.0, mask_same_region=False)
    masked = msd_loss(v, t, scale, region, v, t, q, mu=0.0)
    assert unmasked["n_false_negatives"].item() == 1.0 and masked["n_false_negatives"].item() == 1.0
    assert masked["n_masked"].item() == 1.0 and unmasked["n_masked"].item() == 0.0
    # by hand: candidates are [positive, its stale copy, the other region]; the copy scores like the positive
    s10 = 10.0
    i2t = torch.log_softmax(s10 * v @ torch.cat([t, t, other_t]).T, dim=1)[0, 0]
    t2i = torch.log_softmax(s10 * t @ torch.cat([v, v, other_i]).T, dim=1)[0, 0]
    assert unmasked["loss"].item() == pytest.approx(-0.5 * (i2t + t2i).item(), abs=1e-5)

    # In-batch pairs of one region are not negatives of each other either.
    v2, t2 = F.normalize(torch.randn(2, 4), dim=1), F.normalize(torch.randn(2, 4), dim=1)
    same = msd_loss(v2, t2, scale, torch.tensor([3, 3]), mu=0.0)["loss"]
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # each query sees only its positive
    assert msd_loss(v2, t2, scale, torch.tensor([3, 4]), mu=0.0)["loss"].item() > 0.01


def test_queue_fifo_wraparound():
    q = FeatureQueue(5, 1)
    assert q.n_filled == 0
    q.enqueue(
        torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([1, 2, 3])
    )
    assert int(q.ptr) == 3 and q.n_filled == 3
    assert q.region.tolist() == [1, 2, 3, -1, -1]
    q.enqueue(
        torch.tensor([[4.0], [5.0], [6.0]]), torch.tensor([[4.0], [5.0], [6.0]]), torch.tensor([4, 5, 6])
    )
    assert int(q.ptr) == 1 and q.n_filled == 5
    assert q.region.tolist() == [6, 2, 3, 4, 5]  # oldest (1) overwritten
    assert q.image[:, 0].tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    big = torch.arange(10, 17, dtype=torch.float32).unsqueeze(1)  # 7 > size: keep newest 5
    q.enqueue(big, big, torch.arange(10, 17))
    assert sorted(q.region.tolist()) == [12, 13, 14, 15, 16]
    assert q.region[int(q.ptr) - 1].item() == 16  # newest sits just before the pointer
    with pytest.raises(ValueError):
        q.enqueue(big[:1], big[:1], torch.tensor([-1]))


def test_effective_queue_size():
    assert effective_queue_size(4096, 100_000) == 4096
    assert effective_queue_size(4096, 1000) == 500
    assert effective_queue_size(4096, 1) == 0
    with pytest.raises(ValueError):
        effective_queue_size(-1, 10)


def test_ema_update_formula_and_teacher_frozen():
    torch.manual_seed(4)
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    msd = MomentumSelfDistillation(student, embed_dim=2, queue_size=4, momentum=0.9)
    assert all(not p.requires_grad for p in msd.teacher.parameters())
    t0 = {k: v.clone() for k, v in msd.teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student(torch.randn(4, 3))  # changes BN running stats (buffers)
    msd.update_teacher(student)
    for name, p_s in student.named_parameters():
        torch.testing.assert_close(dict(msd.teacher.named_parameters())[name], 0.9 * t0[name] + 0.1 * p_s)
    torch.testing.assert_close(msd.teacher[1].running_mean, student[1].running_mean)
    assert "queue.ptr" in msd.state_dict() and "teacher.0.weight" in msd.state_dict()


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        feats = _global_features()
        local = slice(2 * rank, 2 * rank + 2)
        queue = FeatureQueue(7, 4)
        queue.enqueue(feats["qi"][local], feats["qt"][local], feats["qr"][local])  # gathered: 4 entries
        out = msd_loss(
            feats["v"][local], feats["t"][local], torch.tensor(2.0), feats["r"][local],
            feats["vm"][local], feats["tm"][local], queue, mu=0.5,
        )  # fmt: skip
        queue.enqueue(feats["vm"][local], feats["tm"][local], feats["r"][local])
        torch.save({"loss": out["loss"], "queue": queue.state_dict()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _global_features() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)

    def n(rows: int) -> torch.Tensor:
        return F.normalize(torch.randn(rows, 4, generator=g), dim=1)

    feats = {name: n(4) for name in ("v", "t", "vm", "tm", "qi", "qt")}
    return {**feats, "r": torch.tensor([0, 1, 2, 0]), "qr": torch.tensor([20, 1, 22, 23])}


@pytest.mark.slow
def test_ddp_two_ranks_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    f = _global_features()
    queue = FeatureQueue(7, 4)
    queue.enqueue(f["qi"], f["qt"], f["qr"])
    single = msd_loss(f["v"], f["t"], torch.tensor(2.0), f["r"], f["vm"], f["tm"], queue, mu=0.5)
    # Every query's loss sees the same candidates, so the mean of the rank losses is the global loss.
    torch.testing.assert_close((results[0]["loss"] + results[1]["loss"]) / 2, single["loss"])
    queue.enqueue(f["vm"], f["tm"], f["r"])
    for res in results:  # every rank holds the same queue as one process with the global batch
        for key, value in queue.state_dict().items():
            assert torch.equal(res["queue"][key], value), key
