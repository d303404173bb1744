"""Model size and inference speed (UrbanLN Fig. 4, "Model Scale and Inference Efficiency").

Parameter counts of the paper-size models are exact and need no weights: the models are built
on PyTorch's ``meta`` device, where parameters have shapes but no storage, so a 300 M-parameter
UrbanLN (student + EMA teacher) is counted in well under a second without allocating its memory.
Throughput is wall-clock images per second of whatever function is given, measured in one
process with the batch size, resolution, thread count and device stated next to the number.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from urbanlib import style as house
from urbanlib.cache import REPO_ROOT
from urbanlib.models import create_model
from urbanlib.models.ipsi import stretch_clip
from urbanlib.models.parameters import count_parameters
from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig

__all__ = [
    "BENCH_TARGETS",
    "bench_profile",
    "bench_summary",
    "count_parameters",
    "image_encoder",
    "measure_throughput",
    "paper_size_builders",
    "paper_size_parameter_counts",
    "parameter_counts",
    "plot_bench_profile",
    "plot_efficiency",
    "read_bench",
    "throughput_table",
]

Builder = Callable[[str], nn.Module]  # device name ("meta" | "cpu" | ...) -> model built there


def image_encoder(model: nn.Module) -> nn.Module | None:
    """The vision tower that produces region features at inference (``.visual`` or ``.clip.visual``)."""
    for path in ("visual", "clip.visual", "model.visual"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.Module):
            return obj
    return None


def parameter_counts(builders: Mapping[str, Builder], device: str = "meta") -> pd.DataFrame:
    """Build each model on ``device`` and count its parameters.

    Args:
        builders: display name -> function ``device -> nn.Module``.
        device: ``"meta"`` (shapes only, no memory) or a real device.

    Returns:
        DataFrame: ``model``, ``total``, ``trainable``, ``frozen``, ``image_encoder`` (parameters
        of the vision tower used at inference; 0 if the model has none), ``built_on``.
    """
    rows = []
    for name, build in builders.items():
        with torch.device(device):
            model = build(device)
        counts = count_parameters(model)
        visual = image_encoder(model)
        rows.append({"model": name, "total": counts["total"], "trainable": counts["trainable"],
                     "frozen": counts["frozen"],
                     "image_encoder": count_parameters(visual)["total"] if visual is not None else 0,
                     "built_on": device})
        del model
    return pd.DataFrame(rows)


def _urbanclip_paper(device: str) -> nn.Module:

    return create_model("urbanclip-paper")


def _clip_b16(device: str) -> nn.Module:
    import open_clip  # deferred: the reference side of the benchmark only

    logging.disable(logging.WARNING)  # open_clip logs "no pretrained weights loaded": random init is the point
    try:
        return open_clip.create_model("ViT-B-16", pretrained=None, device=device)
    finally:
        logging.disable(logging.NOTSET)


def _clip_b16_ipsi(device: str) -> nn.Module:

    return stretch_clip(_clip_b16(device))


def _urbanln_paper(device: str) -> nn.Module:

    return UrbanLN(_clip_b16(device), UrbanLNConfig())  # stretches the CLIP (IPSI) and adds the EMA teacher


def paper_size_builders() -> dict[str, Builder]:
    """Builders of the paper-size models, random init (no downloads).

    - ``UrbanCLIP (urbanclip-paper)``: :func:`urbanlib.models.create_model` of the paper config
      (ViT-B/16 at 224 px, 6 + 6 decoder layers, full 49,408-token LM head).
    - ``CLIP ViT-B/16``: ``open_clip.create_model("ViT-B-16", pretrained=None)``, UrbanLN's backbone.
    - ``CLIP ViT-B/16 + IPSI``: the same stretched to 248 text positions.
    - ``UrbanLN (paper)``: the stretched CLIP plus its EMA teacher (frozen, counted in total).
    """
    return {
        "UrbanCLIP (urbanclip-paper)": _urbanclip_paper,
        "CLIP ViT-B/16": _clip_b16,
        "CLIP ViT-B/16 + IPSI": _clip_b16_ipsi,
        "UrbanLN (paper)": _urbanln_paper,
    }


def paper_size_parameter_counts(device: str = "meta") -> pd.DataFrame:
    """Exact parameter counts of the paper-size models (see :func:`paper_size_builders`).

    Built on the ``meta`` device by default: exact shapes, no weight memory, about a second.
    """
    return parameter_counts(paper_size_builders(), device=device)


def _n_images(batch: torch.Tensor) -> tuple[int, int, str]:
    """(regions, images, "HxW") of an image batch (B, 3, H, W) or street views (B, V, 3, H, W)."""
    if batch.ndim == 4:
        return batch.shape[0], batch.shape[0], f"{batch.shape[-2]}x{batch.shape[-1]}"
    if batch.ndim == 5:
        return batch.shape[0], batch.shape[0] * batch.shape[1], f"{batch.shape[-2]}x{batch.shape[-1]}"
    raise ValueError(f"image batch must be (B, 3, H, W) or (B, V, 3, H, W), got {tuple(batch.shape)}")


def measure_throughput(
    fn: Callable,
    batch: torch.Tensor | dict,
    warmup: int = 2,
    repeats: int = 5,
    threads: int | None = None,
) -> dict:
    """Inference speed of ``fn(batch)`` in images per second (wall clock, ``torch.no_grad``).

    Args:
        fn: the inference call, e.g. ``model.encode_image_features``.
        batch: an image tensor (B, 3, H, W) / (B, V, 3, H, W), or a dict whose ``"image"`` is one.
        warmup: untimed calls first (allocator, kernel selection).
        repeats: timed calls; the median time is reported.
        threads: torch intra-op threads during the measurement (default: leave as is).

    Returns:
        dict: ``images_per_s`` (images / median seconds per call; street views count one image
        each), ``regions_per_s``, ``batch_size`` (regions), ``images_per_batch``, ``resolution``,
        ``threads``, ``device``, ``dtype``, ``warmup``, ``repeats``, ``median_s``, ``min_s``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats ({repeats}) must be >= 1 and warmup ({warmup}) >= 0")
    images = batch["image"] if isinstance(batch, dict) else batch
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"batch must be a tensor or a dict with an 'image' tensor, got {type(images).__name__}")
    n_regions, n_images, resolution = _n_images(images)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if images.device.type == "cuda" else (lambda: None)
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                sync()
                t0 = time.perf_counter()
                fn(batch)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    median = statistics.median(times)
    device = str(images.device)
    if images.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(images.device)})"
    return {"images_per_s": n_images / median, "regions_per_s": n_regions / median, "batch_size": n_regions,
            "images_per_batch": n_images, "resolution": resolution, "threads": used_threads, "device": device,
            "dtype": str(images.dtype).replace("torch.", ""), "warmup": warmup, "repeats": repeats,
            "median_s": median, "min_s": min(times)}


def throughput_table(
    models: Mapping[str, tuple[Callable, torch.Tensor | dict]],
    warmup: int = 2,
    repeats: int = 5,
    threads: int | None = None,
) -> pd.DataFrame:
    """:func:`measure_throughput` of several models, one after the other in one process.

    Args:
        models: display name -> (inference function, batch).
        warmup: untimed calls per model.
        repeats: timed calls per model.
        threads: torch threads for every measurement.

    Returns:
        DataFrame, one row per model (``model`` then the keys of :func:`measure_throughput`).
    """
    return pd.DataFrame([{"model": name, **measure_throughput(fn, batch, warmup, repeats, threads)}
                         for name, (fn, batch) in models.items()])


def plot_efficiency(counts: pd.DataFrame, speed: pd.DataFrame | None = None):
    """Bars of total vs trainable parameters per model and, if given, images/s (UrbanLN Fig. 4).

    Args:
        counts: :func:`parameter_counts` output (``model``, ``total``, ``trainable``).
        speed: optional DataFrame with ``model`` and ``images_per_s`` (and ideally ``device``,
            ``batch_size``, ``resolution`` for the caption).

    Returns:
        matplotlib Figure.
    """
    for col in ("model", "total", "trainable"):
        if col not in counts.columns:
            raise ValueError(f"counts lacks column {col!r}")
    n_panels = 1 + (speed is not None)
    fig, axes = plt.subplots(1, n_panels, figsize=house.figsize(n_panels, 1, panel_height=3.6), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(counts))
    ax.bar(x - 0.2, counts["total"] / 1e6, 0.4, label="total")
    ax.bar(x + 0.2, counts["trainable"] / 1e6, 0.4, label="trainable")
    ax.set_xticks(x, counts["model"], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("parameters (M)")
    ax.legend(fontsize=8)
    if speed is not None:
        ax2 = axes[0][1]
        ax2.bar(np.arange(len(speed)), speed["images_per_s"], color="C2")
        ax2.set_xticks(np.arange(len(speed)), speed["model"], rotation=25, ha="right", fontsize=8)
        ax2.set_ylabel("images / s")
        facts = [f"{c}: {', '.join(map(str, speed[c].unique()))}" for c in ("device", "batch_size", "resolution",
                                                                            "threads") if c in speed.columns]
        ax2.set_title("; ".join(facts), fontsize=7)
    fig.tight_layout()
    return fig


# Issue 15's targets for the training-speed benchmark (``benchmarks/bench.py``): figure -> (op, bound).
BENCH_TARGETS = {
    "urbanclip_vs_coca_step": (">=", 1.2),
    "urbanln_vs_clip248_step": (">=", 0.9),
    "msd_overhead": ("<=", 0.10),
    "mfu_fp32_urbanclip": (">=", 0.75),
    "mfu_fp32_urbanln": (">=", 0.65),
    "extraction_ratio": (">=", 1.2),
}


def read_bench(path=None) -> pd.DataFrame:
    """``results/bench.csv`` written by ``make bench``: one row per figure with provenance columns."""
    path = Path(path) if path is not None else REPO_ROOT / "results" / "bench.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `make bench` to measure it")
    return pd.read_csv(path)


def bench_summary(bench: pd.DataFrame) -> pd.DataFrame:
    """The ratios, overheads and MFUs of a bench run with their target and whether it is met.

    Returns:
        DataFrame indexed by figure: ``median``, ``min``, ``max`` (over rounds), ``unit``, ``target``,
        ``met`` (None where the issue set no target), ``note``.
    """
    keep = bench[~bench["figure"].str.startswith(("step_s_", "time_s_", "flops_", "profile_"))].set_index("figure")
    rows = []
    for figure, r in keep.iterrows():
        op, bound = BENCH_TARGETS.get(figure, (None, None))
        met = None if op is None else bool(r["value"] >= bound if op == ">=" else r["value"] <= bound)
        rows.append({"figure": figure, "median": r["value"], "min": r["lo"], "max": r["hi"], "unit": r["unit"],
                     "target": f"{op} {bound}" if op else "", "met": met, "note": r["note"]})
    return pd.DataFrame(rows).set_index("figure")


PROFILE_CATEGORIES = ("matmul", "attention", "gelu", "layer_norm", "copies", "optimizer", "elementwise", "other")
PROFILE_CASES = {"urbanclip": "UrbanCLIP", "coca": "open_clip CoCa", "urbanln": "UrbanLN (IPSI + MSD)",
                 "clip248": "open_clip CLIP-248"}


def bench_profile(bench: pd.DataFrame) -> pd.DataFrame:
    """Where one training step's time goes: case x category shares of self CPU time (``profile_*`` rows).

    Returns an empty frame for a ``bench.csv`` written before the profile existed.
    """
    rows = bench[bench["figure"].str.startswith("profile_")]
    if rows.empty:
        return pd.DataFrame()
    cases = "|".join(PROFILE_CASES)
    parts = rows["figure"].str.extract(rf"^profile_({cases})_(\w+)$")
    table = pd.DataFrame({"case": parts[0], "category": parts[1], "share": rows["value"].to_numpy()})
    table = table.dropna().pivot(index="case", columns="category", values="share")
    order = [c for c in PROFILE_CASES if c in table.index]
    columns = [c for c in PROFILE_CATEGORIES if c in table.columns] + [c for c in table.columns
                                                                         if c not in PROFILE_CATEGORIES]
    return table.loc[order, columns].rename(index=PROFILE_CASES)


def plot_bench_profile(profile: pd.DataFrame):
    """Stacked bars, one per model: the share of a step's CPU time per category of operation."""
    fig, ax = plt.subplots(figsize=(house.BOOK_WIDTH, 1.0 + 0.45 * len(profile)))
    left = pd.Series(0.0, index=profile.index)
    for category in profile.columns:
        ax.barh(profile.index, profile[category], left=left, label=category.replace("_", " "))
        left += profile[category]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of one training step's self CPU time")
    ax.invert_yaxis()
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title("Where a training step's time goes (make bench, one thread)")
    fig.tight_layout()
    return fig
