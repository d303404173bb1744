"""``benchmarks/bench.py --quick``: every figure is produced (no timing assertions)."""

import csv
import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIGURES = [
    "urbanclip_vs_coca_step", "urbanln_vs_clip248_step", "urbanln_nomsd_vs_clip248_step", "msd_overhead",
    "extraction_ratio", "probe_ratio", "peak_fp32", "peak_bf16",
    *[f"{kind}_{name}" for name in ("urbanclip", "coca", "urbanln", "urbanln_nomsd", "clip248")
      for kind in ("step_s", "flops", "mfu_fp32", "mfu_bf16")],
    *[f"flops_{name}" for name in ("extract_urbanlib", "extract_open_clip")],
    *[f"time_s_teacher_{way}" for way in ("fp32_no_grad", "fp32_inference", "bf16")],
    "teacher_share_of_nomsd_step", "teacher_bf16_speedup", "msd_overhead_flop_floor", "teacher_bf16_max_abs_dev",
    *[f"profile_{case}_{cat}" for case in ("urbanclip", "coca", "urbanln", "clip248")
      for cat in ("matmul", "attention", "gelu", "layer_norm", "copies", "optimizer", "elementwise", "other")],
]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_bench_writes_every_figure(tmp_path):
    bench = _load_bench()
    out = tmp_path / "bench.csv"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    by_figure = {r["figure"]: r for r in rows}
    missing = [f for f in FIGURES if f not in by_figure]
    assert not missing, f"figures not produced: {missing}"
    for row in rows:
        assert math.isfinite(float(row["value"])), row
        assert row["machine"] and row["torch"] and row["git_commit"] and row["threads"] == "1" and row["mode"] == "quick"
    assert float(by_figure["flops_urbanclip"]["value"]) > 0 and float(by_figure["flops_coca"]["value"]) > 0
    from urbanlib.analysis.efficiency import BENCH_TARGETS, bench_summary, read_bench

    # the MSD teacher is a forward of the student's size: its FLOPs are a third of a forward+backward step
    assert 0.2 < float(by_figure["msd_overhead_flop_floor"]["value"]) < 0.5
    for case in ("urbanclip", "coca", "urbanln", "clip248"):
        shares = [float(r["value"]) for f, r in by_figure.items() if f.startswith(f"profile_{case}_")]
        # shares are written to 6 significant digits, so their sum is 1 only to about 1e-5
        assert abs(sum(shares) - 1) < 1e-4 and float(by_figure[f"profile_{case}_matmul"]["value"]) > 0
    summary = bench_summary(read_bench(out))
    assert set(BENCH_TARGETS) <= set(summary.index)
    assert not summary.index.str.startswith("profile_").any()
    from urbanlib.analysis.efficiency import bench_profile, plot_bench_profile

    profile = bench_profile(read_bench(out))
    assert list(profile.index) == ["UrbanCLIP", "open_clip CoCa", "UrbanLN (IPSI + MSD)", "open_clip CLIP-248"]
    assert set(profile.columns) == {"matmul", "attention", "gelu", "layer_norm", "copies", "optimizer",
                                    "elementwise", "other"}
    assert plot_bench_profile(profile).axes[0].get_xlim() == (0, 1)
    assert summary.loc[list(BENCH_TARGETS), "met"].map(lambda v: isinstance(v, bool)).all()


def test_provenance_is_urbanlibs_own():
    """bench.csv's machine and commit mean what every other store's do (urbanlib.provenance), columns unchanged."""
    from urbanlib.provenance import commit, machine

    prov = _load_bench().provenance(1, "quick")
    assert list(prov) == ["mode", "machine", "threads", "torch", "git_commit", "date"]
    assert prov["machine"] == machine() and prov["git_commit"] == commit(("urbanlib", "benchmarks"))
