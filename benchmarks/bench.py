"""Training-speed benchmark: urbanlib's models against open_clip's at equal configs (issue 15).

Run ``make bench`` (or ``python benchmarks/bench.py``). Everything is built in one process and the
cases are interleaved round by round, so a busy machine slows both sides of a ratio alike; medians
and ranges (min-max over rounds) are printed and written to ``results/bench.csv`` with provenance.

Cases (``cpu`` configs, one torch thread, fused AdamW on both sides):

* ``urbanclip`` vs ``coca``: UrbanCLIP (``urbanclip-cpu``, a corpus-sized vocabulary) against open_clip's
  ``CoCa`` with the same widths, depths, caption length and vocabulary, trained with ``CoCaLoss``;
* ``urbanln`` (IPSI 248 tokens + MSD) and ``urbanln_nomsd`` against open_clip ``CLIP`` (``clip-cpu``)
  stretched to 248 tokens with ``ClipLoss`` (plain InfoNCE);
* extraction: ``UrbanLN.encode_image_features`` vs open_clip ``CLIP.encode_image`` (inference mode);
* probe: :func:`urbanlib.eval.probe.fit_probes` vs one ``nn.Sequential`` head per (seed, indicator);
* MFU: FLOPs of a step (``torch.utils.flop_counter``) / step time / the fp32 or bf16 matmul peak
  measured in the same rounds;
* the MSD teacher, the lever the targets hinge on: its forward alone under ``no_grad``,
  ``inference_mode`` and bf16 autocast (with the bf16 features' largest deviation from fp32), and the
  FLOP floor of the MSD overhead (teacher FLOPs / step FLOPs without MSD);
* a profile of one step per case (``torch.profiler``): the share of self CPU time in matmuls,
  attention, GELU, LayerNorm, copies and elementwise ops, the optimizer and the rest, so a target that
  is not met comes with where its time goes.

``--quick`` uses the tiny configs, small batches and one round (the test suite runs it).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from urbanlib.provenance import commit, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "bench.csv"
BENCH_SOURCES = ("urbanlib", "benchmarks")  # an uncommitted edit here marks the commit "+dirty"

# Sizes per mode: model size suffix, batch, caption length distribution, probe problem.
MODES = {
    "full": {"size": "cpu", "batch": 32, "extract_batch": 64, "vocab": 1024, "steps": 2, "rounds": 5,
             "probe": {"n": 600, "features": 128, "indicators": 6, "seeds": 3, "epochs": 50}},
    "quick": {"size": "tiny", "batch": 4, "extract_batch": 8, "vocab": 64, "steps": 1, "rounds": 1,
              "probe": {"n": 60, "features": 16, "indicators": 2, "seeds": 1, "epochs": 3}},
}
LN_TEXT_LENGTHS = (100, 300)  # UrbanLN long captions in tokens (SynthCity: 14% exceed 248), cut at 248
UC_TEXT_FRACTION = (0.3, 1.0)  # UrbanCLIP captions fill 30-100% of the context


# ---------------------------------------------------------------- data
def _captions(batch: int, context: int, lengths: tuple[int, int], kept: torch.Tensor, gen: torch.Generator,
              sot: int, eot: int) -> torch.Tensor:
    """(batch, context) token ids: <start>, random kept tokens, <end>, zero padding."""
    text = torch.zeros(batch, context, dtype=torch.long)
    for i in range(batch):
        n = min(int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=gen)), context)
        text[i, 0] = sot
        text[i, 1 : n - 1] = kept[torch.randint(len(kept), (n - 2,), generator=gen)]
        text[i, n - 1] = eot
    return text


# ---------------------------------------------------------------- model pairs
def _fused_adamw(params) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-4, weight_decay=0.05, fused=True)


def _step_fn(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], after: Callable[[], None] | None = None):
    opt = _fused_adamw(model.parameters())

    def step() -> None:
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if after is not None:
            after()

    return step, loss_fn


def build_urbanclip_pair(mode: dict, gen: torch.Generator) -> dict:
    """UrbanCLIP and open_clip CoCa at the same sizes and vocabulary, with one batch each."""
    import open_clip
    from open_clip.loss import CoCaLoss

    from urbanlib.models import Vocab, create_model, get_config
    from urbanlib.models.vocab import EOT_ID, SOT_ID

    size, b = mode["size"], mode["batch"]
    vocab = Vocab(range(1, mode["vocab"] - 3))  # a corpus-sized LM head: len(vocab) == mode["vocab"]
    torch.manual_seed(0)
    ours = create_model(f"urbanclip-{size}", vocab=vocab)
    cfg = get_config(f"urbanclip-{size}")
    v, t = cfg.vision, cfg.text
    n_text = cfg.context_length  # open_clip CoCa feeds text[:, :-1] and keeps a slot for its [CLS]
    torch.manual_seed(0)
    coca = open_clip.CoCa(
        embed_dim=t.width,
        vision_cfg={"image_size": v.image_size, "patch_size": v.patch_size, "width": v.width, "layers": v.layers,
                    "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio, "attentional_pool": True,
                    "attn_pooler_heads": v.heads, "attn_pooler_queries": cfg.pooler_queries,
                    "output_tokens": True},
        text_cfg={"context_length": n_text, "vocab_size": len(vocab), "width": t.width, "heads": t.heads,
                  "layers": t.unimodal_layers, "mlp_ratio": t.mlp_ratio, "embed_cls": True, "output_tokens": True},
        multimodal_cfg={"context_length": n_text, "vocab_size": len(vocab), "width": t.width, "heads": t.heads,
                        "layers": t.multimodal_layers, "mlp_ratio": t.mlp_ratio},
    )
    torch.nn.init.normal_(coca.text_decoder.text_projection, std=t.width ** -0.5)  # open_clip leaves it empty
    lo, hi = (max(4, int(f * cfg.context_length)) for f in UC_TEXT_FRACTION)
    text = _captions(b, cfg.context_length, (lo, hi), vocab.kept_ids[3:-1], gen, SOT_ID, EOT_ID)
    image = torch.randn(b, 3, v.image_size, v.image_size, generator=gen)
    batch = {"image": image, "text": text}
    coca_text = vocab.encode(text)  # the same captions in the compact ids of CoCa's equal-size vocabulary
    coca_loss = CoCaLoss(caption_loss_weight=cfg.lambda_lm, clip_loss_weight=cfg.lambda_con, pad_id=0)

    def coca_loss_only() -> torch.Tensor:
        out = coca(image, coca_text)
        clip_l, cap_l = coca_loss(out["image_features"], out["text_features"], out["logits"], out["labels"],
                                  out["logit_scale"])
        return clip_l + cap_l

    ours.train(), coca.train()
    return {"urbanclip": _step_fn(ours, lambda: ours(batch)["loss"]), "coca": _step_fn(coca, coca_loss_only)}


def _clip_cfg(size: str) -> dict:
    from urbanlib.models.clip import clip_config

    return clip_config(f"clip-{size}")


def build_urbanln_pairs(mode: dict, gen: torch.Generator) -> tuple[dict, dict]:
    """UrbanLN (MSD and w/o MSD) and open_clip CLIP-248 with InfoNCE; plus the extraction pair."""
    import open_clip
    from open_clip.loss import ClipLoss

    from urbanlib.models.clip import create_clip
    from urbanlib.models.ipsi import stretch_clip
    from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig

    size, b = mode["size"], mode["batch"]
    cfg = _clip_cfg(size)
    n_pairs = 205  # SynthCity default scale: 205 training pairs -> queue K = 102
    torch.manual_seed(0)
    ln = UrbanLN(create_clip(f"clip-{size}"), UrbanLNConfig(n_train_pairs=n_pairs))
    torch.manual_seed(0)
    ln_plain = UrbanLN(create_clip(f"clip-{size}"), UrbanLNConfig(n_train_pairs=n_pairs, use_msd=False))
    torch.manual_seed(0)
    ref = stretch_clip(open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                                      text_cfg=cfg["text_cfg"]))
    px = cfg["vision_cfg"]["image_size"]
    vocab = cfg["text_cfg"]["vocab_size"]
    kept = torch.arange(1, vocab - 2)
    text = _captions(b, 248, LN_TEXT_LENGTHS, kept, gen, vocab - 2, vocab - 1)
    image = torch.randn(b, 3, px, px, generator=gen)
    batch = {"image": image, "text": text, "region_index": torch.arange(b)}
    clip_loss = ClipLoss()

    def ref_loss() -> torch.Tensor:
        img, txt, scale = ref(image, text)
        return clip_loss(img, txt, scale)

    for m in (ln, ln_plain, ref):
        m.train()
    steps = {
        "urbanln": _step_fn(ln, lambda: ln(batch)["loss"], lambda: ln.after_optimizer_step(0)),
        "urbanln_nomsd": _step_fn(ln_plain, lambda: ln_plain(batch)["loss"]),
        "clip248": _step_fn(ref, ref_loss),
    }
    # Extraction: the frozen image encoder's downstream call, inference mode, a larger batch.
    ext_images = torch.randn(mode["extract_batch"], 3, px, px, generator=gen)
    ln_eval, ref_eval = ln.eval(), ref  # ref is re-used after training steps only for timing
    extract = {
        "extract_urbanlib": lambda: ln_eval.encode_image_features(ext_images),
        "extract_open_clip": lambda: ref_eval.encode_image(ext_images),
    }
    ln.train()
    teacher = _teacher_levers(ln, image, text)
    return steps, extract, teacher


def _teacher_levers(ln, image: torch.Tensor, text: torch.Tensor) -> dict:
    """The MSD teacher's forward as UrbanLN runs it (``no_grad``), and two cheaper ways to run it."""
    from urbanlib.models import towers

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        img = ln._image_embedding(ln.msd.teacher, image, None)
        return img, torch.nn.functional.normalize(towers.encode_text(ln.msd.teacher, text), dim=-1)

    def no_grad() -> None:
        with torch.no_grad():
            forward()

    def inference() -> None:
        with torch.inference_mode():
            forward()

    def bf16() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            forward()

    return {"teacher_fp32_no_grad": no_grad, "teacher_fp32_inference": inference, "teacher_bf16": bf16,
            "_forward": forward}


def teacher_bf16_deviation(forward: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Largest |bf16 - fp32| over the teacher's normalised image and text features."""
    with torch.no_grad():
        ref = forward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = forward()
    return max(float((a.float() - b).abs().max()) for a, b in zip(low, ref, strict=True))


# ---------------------------------------------------------------- profile
PROFILE_CATEGORIES = {  # first match wins; the op names are ATen's
    "matmul": ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm", "addbmm", "conv"),
    "attention": ("scaled_dot_product", "_flash_attention", "_efficient_attention", "softmax"),
    "gelu": ("gelu",),
    "layer_norm": ("layer_norm",),
    "copies": ("copy_", "clone", "contiguous", "cat", "stack", "to_copy", "_to_copy", "expand", "index",
               "embedding", "fill_", "zero_", "zeros", "empty", "transpose", "permute", "view", "reshape"),
    "optimizer": ("_fused_adamw", "adamw", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt"),
    "elementwise": ("add", "mul", "div", "sub", "neg", "exp", "sum", "mean", "norm", "where", "masked",
                    "log", "pow", "max", "min", "sigmoid", "threshold", "relu"),
}


def _category(op: str) -> str:
    name = op.removeprefix("aten::").lower()
    for category, keys in PROFILE_CATEGORIES.items():
        if any(name == k or name.startswith(k) or f"_{k}" in name for k in keys):
            return category
    return "other"


def profile_step(step: Callable[[], None], repeats: int = 2) -> dict[str, float]:
    """Share of self CPU time per category (:data:`PROFILE_CATEGORIES`) over ``repeats`` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    totals: dict[str, float] = dict.fromkeys([*PROFILE_CATEGORIES, "other"], 0.0)
    for event in prof.key_averages():
        if event.key.startswith(("aten::", "Optimizer", "autograd::")) or "Backward" in event.key:
            totals[_category(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}


# ---------------------------------------------------------------- probe
def build_probe_pair(mode: dict) -> dict:
    """fit_probes against a plain per-head loop on the same synthetic problem and epochs."""
    from urbanlib.data.splits import Split
    from urbanlib.eval.probe import ProbeConfig, fit_probes

    p = mode["probe"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(p["n"], p["features"])).astype(np.float32)
    y = x[:, : p["indicators"]] @ rng.normal(size=(p["indicators"], p["indicators"])) + 0.1 * rng.normal(
        size=(p["n"], p["indicators"]))
    idx = rng.permutation(p["n"])
    a, b = int(0.6 * p["n"]), int(0.8 * p["n"])
    split = Split(train=np.sort(idx[:a]), val=np.sort(idx[a:b]), test=np.sort(idx[b:]))
    seeds = list(range(p["seeds"]))
    cfg = ProbeConfig(max_epochs=p["epochs"], patience=p["epochs"] + 1)  # every head runs every epoch

    def ours() -> None:
        fit_probes(x, y, split, seeds, cfg)

    xt = torch.from_numpy(x[split.train])
    xv = torch.from_numpy(x[split.val])
    yt = torch.from_numpy(y[split.train].astype(np.float32))
    yv = torch.from_numpy(y[split.val].astype(np.float32))

    def loop() -> None:
        for seed in seeds:
            for j in range(p["indicators"]):
                torch.manual_seed(seed)
                head = torch.nn.Sequential(torch.nn.Linear(x.shape[1], cfg.hidden[0]), torch.nn.ReLU(),
                                           torch.nn.Linear(cfg.hidden[0], 1))
                opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
                best = float("inf")
                for _ in range(cfg.max_epochs):
                    opt.zero_grad()
                    torch.nn.functional.mse_loss(head(xt)[:, 0], yt[:, j]).backward()
                    opt.step()
                    with torch.no_grad():
                        best = min(best, torch.nn.functional.mse_loss(head(xv)[:, 0], yv[:, j]).item())

    return {"probe_urbanlib": ours, "probe_loop": loop}


# ---------------------------------------------------------------- measurement
def matmul_peak(dtype: torch.dtype, sizes=(256, 512, 1024), min_s: float = 0.15) -> float:
    """Best GFLOP/s of square matmuls of ``dtype`` on this thread (the same-run peak for MFU)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_s:
            a @ b
            reps += 1
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def count_flops(fn: Callable[[], torch.Tensor], backward: bool = True) -> int:
    """FLOPs of one call (and its backward) as counted by ``torch.utils.flop_counter``."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
        if backward:
            out.backward()
    return int(counter.get_total_flops())


def _timed(fn: Callable[[], object], n: int, inference: bool = False) -> float:
    """Median seconds per call over ``n`` calls."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        if inference:
            with torch.inference_mode():
                fn()
        else:
            fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def provenance(threads: int, mode_name: str) -> dict:
    """Machine, threads, torch version, git commit and time of this run, as :mod:`urbanlib.provenance` words them."""
    return {"mode": mode_name, "machine": machine(), "threads": threads, "torch": torch.__version__,
            "git_commit": commit(BENCH_SOURCES), "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def run(mode_name: str = "full", rounds: int | None = None, out: Path | None = DEFAULT_OUT,
        threads: int = 1, echo: Callable[[str], None] = print) -> list[dict]:
    """Build both sides, interleave the rounds, return (and write) the tidy result rows."""
    torch.set_num_threads(threads)
    mode = MODES[mode_name]
    rounds = rounds or mode["rounds"]
    gen = torch.Generator().manual_seed(0)
    t_start = time.perf_counter()
    uc = build_urbanclip_pair(mode, gen)
    ln_steps, extract, teacher = build_urbanln_pairs(mode, gen)
    probe = build_probe_pair(mode)
    teacher_forward = teacher.pop("_forward")
    steps = {**uc, **ln_steps}

    flops = {name: count_flops(loss_fn) for name, (_, loss_fn) in steps.items()}
    for name, fn in extract.items():
        with torch.inference_mode():
            flops[name] = count_flops(fn, backward=False)
    for step, _ in steps.values():  # warm-up: allocator, kernel choice, optimizer state
        step()
    flops["teacher"] = _forward_flops(teacher_forward)
    deviation = teacher_bf16_deviation(teacher_forward)
    samples: dict[str, list[float]] = {k: [] for k in [*steps, *extract, *probe, *teacher, "peak_fp32",
                                                         "peak_bf16"]}
    groups = [["urbanclip", "coca"], ["urbanln", "urbanln_nomsd", "clip248"]]
    for r in range(rounds):
        samples["peak_fp32"].append(matmul_peak(torch.float32))
        samples["peak_bf16"].append(matmul_peak(torch.bfloat16))
        for group in groups:  # the sides of a ratio alternate step by step, so load bursts hit both
            times: dict[str, list[float]] = {name: [] for name in group}
            for s in range(mode["steps"]):
                for name in group if (r + s) % 2 == 0 else reversed(group):
                    times[name].append(_timed(steps[name][0], 1))
            for name in group:
                samples[name].append(statistics.median(times[name]))
        for group, calls in ((list(extract), mode["steps"] + 1), (list(probe), mode["steps"]),
                             (list(teacher), mode["steps"] + 1)):
            fns = {**extract, **probe, **teacher}
            times = {name: [] for name in group}
            for s in range(calls):
                for name in group if (r + s) % 2 == 0 else reversed(group):
                    times[name].append(_timed(fns[name], 1, inference=name in extract))
            for name in group:
                samples[name].append(statistics.median(times[name]))
        echo(f"round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")

    echo("profiling one step per case")
    profiles = {name: profile_step(steps[name][0]) for name in ("urbanclip", "coca", "urbanln", "clip248")}
    rows = summarise(samples, flops, mode) + teacher_rows(samples, flops, deviation) + profile_rows(profiles)
    prov = provenance(threads, mode_name)
    rows = [{**row, **prov} for row in rows]
    echo(format_table(rows))
    echo(f"total {time.perf_counter() - t_start:.0f} s")
    if out is not None:
        write_csv(rows, out)
        echo(f"wrote {out}")
    return rows


def _forward_flops(forward: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    return int(counter.get_total_flops())


def teacher_rows(samples: dict[str, list[float]], flops: dict[str, int], deviation: float) -> list[dict]:
    """The MSD teacher: its time per way of running it, its share of the step, the FLOP floor, bf16's error."""
    def row(figure, values, unit, note):
        med, lo, hi = _stats(values)
        return {"figure": figure, "value": med, "lo": lo, "hi": hi, "unit": unit, "note": note, "rounds": len(values)}

    rows = [row(f"time_s_{name}", samples[name], "s", "MSD teacher forward (image + text), one training batch")
            for name in ("teacher_fp32_no_grad", "teacher_fp32_inference", "teacher_bf16")]
    rows.append(row("teacher_share_of_nomsd_step",
                    [t / s for t, s in zip(samples["teacher_fp32_no_grad"], samples["urbanln_nomsd"], strict=True)],
                    "fraction", "teacher forward time / UrbanLN step time without MSD"))
    rows.append(row("teacher_bf16_speedup",
                    [a / b for a, b in zip(samples["teacher_fp32_no_grad"], samples["teacher_bf16"], strict=True)],
                    "x", "teacher forward fp32 no_grad / bf16 autocast"))
    floor = flops["teacher"] / flops["urbanln_nomsd"]
    rows.append({"figure": "msd_overhead_flop_floor", "value": floor, "lo": floor, "hi": floor, "unit": "fraction",
                 "rounds": 1, "note": "teacher forward FLOPs / step FLOPs without MSD: the overhead at equal speed"})
    rows.append({"figure": "teacher_bf16_max_abs_dev", "value": deviation, "lo": deviation, "hi": deviation,
                 "unit": "abs", "rounds": 1, "note": "largest |bf16 - fp32| of the teacher's unit-norm features"})
    return rows


def profile_rows(profiles: dict[str, dict[str, float]]) -> list[dict]:
    """One row per (case, category): the share of the step's self CPU time."""
    return [{"figure": f"profile_{case}_{cat}", "value": share, "lo": share, "hi": share, "unit": "fraction",
             "rounds": 1, "note": "share of one step's self CPU time (torch.profiler, 2 steps)"}
            for case, shares in profiles.items() for cat, share in shares.items()]


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def summarise(samples: dict[str, list[float]], flops: dict[str, int], mode: dict) -> list[dict]:
    """Turn per-round timings into the tidy rows (figure, value, lo, hi, unit)."""
    rows = []

    def add(figure: str, values: list[float], unit: str, note: str = "") -> None:
        med, lo, hi = _stats(values)
        rows.append({"figure": figure, "value": med, "lo": lo, "hi": hi, "unit": unit, "note": note,
                     "rounds": len(values)})

    def ratio(slow: str, fast: str) -> list[float]:  # per round: how many times faster `fast` is
        return [s / f for s, f in zip(samples[slow], samples[fast], strict=True)]

    add("urbanclip_vs_coca_step", ratio("coca", "urbanclip"), "x", "speed ratio: CoCa step time / UrbanCLIP step time")
    add("urbanln_vs_clip248_step", ratio("clip248", "urbanln"), "x", "CLIP-248 InfoNCE step time / UrbanLN (IPSI+MSD)")
    add("urbanln_nomsd_vs_clip248_step", ratio("clip248", "urbanln_nomsd"), "x", "CLIP-248 / UrbanLN w/o MSD")
    add("msd_overhead", [a / b - 1 for a, b in zip(samples["urbanln"], samples["urbanln_nomsd"], strict=True)],
        "fraction", "UrbanLN step time with MSD / without - 1")
    add("extraction_ratio", ratio("extract_open_clip", "extract_urbanlib"), "x",
        f"open_clip encode_image / UrbanLN encode_image_features, batch {mode['extract_batch']}")
    add("probe_ratio", ratio("probe_loop", "probe_urbanlib"), "x", "per-head torch loop / fit_probes")
    for name in ("urbanclip", "coca", "urbanln", "urbanln_nomsd", "clip248"):
        add(f"step_s_{name}", samples[name], "s", f"fwd+bwd+fused AdamW, batch {mode['batch']}")
        rows.append({"figure": f"flops_{name}", "value": flops[name], "lo": flops[name], "hi": flops[name],
                     "unit": "FLOP", "note": "one training step (forward + backward)", "rounds": 1})
        for peak in ("fp32", "bf16"):
            per_round = [flops[name] / t / 1e9 / p for t, p in
                         zip(samples[name], samples[f"peak_{peak}"], strict=True)]
            add(f"mfu_{peak}_{name}", per_round, "fraction", f"model FLOP/s / same-run {peak} matmul peak")
    for name in ("extract_urbanlib", "extract_open_clip"):
        add(f"time_s_{name}", samples[name], "s", f"inference, batch {mode['extract_batch']}")
        rows.append({"figure": f"flops_{name}", "value": flops[name], "lo": flops[name], "hi": flops[name],
                     "unit": "FLOP", "note": "one forward", "rounds": 1})
    for name in ("probe_urbanlib", "probe_loop"):
        add(f"time_s_{name}", samples[name], "s", "fit all heads")
    add("peak_fp32", samples["peak_fp32"], "GFLOP/s", "square matmul, best of 256/512/1024")
    add("peak_bf16", samples["peak_bf16"], "GFLOP/s", "square matmul, best of 256/512/1024")
    return rows


FIELDS = ["figure", "value", "lo", "hi", "unit", "rounds", "note", "mode", "machine", "threads", "torch",
          "git_commit", "date"]


def write_csv(rows: list[dict], path: Path) -> None:
    """Write the tidy rows with provenance columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in FIELDS})


def format_table(rows: list[dict]) -> str:
    """The printed summary: median [min, max] per figure."""
    width = max(len(r["figure"]) for r in rows)
    lines = [f"{'figure':<{width}}  {'median':>12}  {'range':>25}  unit"]
    for r in rows:
        lines.append(f"{r['figure']:<{width}}  {r['value']:>12.4g}  [{r['lo']:>10.4g}, {r['hi']:>10.4g}]  {r['unit']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--quick``, ``--rounds N``, ``--out PATH`` (``-`` for no file), ``--threads N``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs, one round (for tests)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 5, quick: 1)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="CSV path ('-' to skip writing)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    out = None if args.out == "-" else Path(args.out)
    run("quick" if args.quick else "full", rounds=args.rounds, out=out, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
