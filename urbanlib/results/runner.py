"""Run the results tier unit by unit (resumable) and verify committed units by re-running them."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from urbanlib.cache import file_lock
from urbanlib.pipeline import hparams
from urbanlib.provenance import cpu_seconds
from urbanlib.scales import get_scale

from .registry import Experiment, NotReady
from .store import append_rows, config_hash, read_results, results_path
from .tier import load_all


def pending_units(exp: Experiment, scale: str, results_dir: Path | None = None):
    """Units of ``exp``'s plan whose rows (same unit id and config hash) are not yet stored."""
    done = read_results(exp.name, results_dir)
    have = set(zip(done["unit"].astype(str), done["config_hash"].astype(str), strict=True))
    return [(u, c, s) for u, c, s in exp.plan(scale) if (u, config_hash(c, scale)) not in have]


@contextlib.contextmanager
def claim(experiment: str, unit: str, results_dir: Path | None = None):
    """Hold ``results/.claims/<experiment>--<unit>.lock`` while a unit runs; yields False if another worker holds it.

    An advisory ``flock``: the kernel drops it when the worker exits or is killed, so a dead
    worker's unit is free again at once and no stale claim needs cleaning up.
    """
    folder = results_path(experiment, results_dir).parent / ".claims"
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / f"{experiment}--{re.sub(r'[^A-Za-z0-9_.-]', '_', unit)}.lock", wait=False) as held:
        yield held


def yield_cpu(autogroup: Path = Path("/proc/self/autogroup")) -> str:
    """Make this worker take only the CPU that everything else leaves: ``nice 19``, and its autogroup too when it has its own.

    Linux ranks a process's nice value only inside its scheduler autogroup (one per session), so a
    worker started with ``setsid`` still gets a fair share against an interactive session; lowering
    its autogroup's nice value as well makes it yield to that session. The autogroup is lowered
    only when this process leads its own session: otherwise the group is the caller's terminal,
    whose shell and later commands would all be slowed. Returns what it did, for the log.
    """
    os.nice(19 - os.nice(0))
    if os.getsid(0) != os.getpid():
        return "nice 19; autogroup shared with the calling session, not lowered (start the worker with setsid)"
    try:
        autogroup.write_text("19")
    except OSError:  # not Linux, or no autogroup scheduling
        return "nice 19 (no autogroup to lower here)"
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if enabled.exists() and enabled.read_text().strip() == "0":
        return "nice 19 (autogroup scheduling is off here, so nice alone ranks it)"
    return "nice 19, autogroup nice 19"


def unit_kind(unit: str) -> str:
    """What a unit runs, without its city, seed or learning rate.

    ``"synth-ring-s0-urbanln"`` -> ``"urbanln"``, ``"synth-ring-s0"`` -> ``""``, ``"all-s1-stage0"`` ->
    ``"stage0"``, a selection candidate ``"UrbanLN_stage_0-lr0.0002"`` -> ``"UrbanLN_stage_0"``.
    """
    m = re.search(r"-s\d+(?:-(.+))?$", unit)
    if m:
        return m.group(1) or ""
    return re.sub(r"-lr[0-9.eE+-]+$", "", unit)


def expected_wall_s(experiment: str, unit: str, results_dir: Path | None = None) -> float | None:
    """A cautious guess of how long ``unit`` takes: the 75th percentile of the stored wall times of its kind.

    Units of the same experiment and :func:`unit_kind` (the benchmark's UrbanLN group on other
    cities and seeds, say) are the reference; without any, the experiment's; without those, the
    longest stored unit of any experiment; None when nothing at all is stored. A unit that found
    its pretraining in the cache or the archive was quick; what that pretraining cost when it was
    trained (``train_cpu_s`` in ``results/pretraining.csv``) is the floor of the guess, since this
    machine may have to train it again.
    """
    done = read_results(experiment, results_dir)
    walls = done.groupby("unit")["wall_s"].first().astype(float).dropna() if not done.empty else pd.Series(dtype=float)
    pre = read_results("pretraining", results_dir)
    if not pre.empty:
        pre = pre[pre["experiment"] == experiment].groupby("unit")["train_cpu_s"].sum(min_count=1).dropna()
        walls = pd.concat([walls, pre], axis=1).max(axis=1) if len(pre) else walls
    same = walls[[unit_kind(u) == unit_kind(unit) for u in walls.index]]
    ref = same if len(same) else walls
    if len(ref):
        return float(np.percentile(ref, 75))
    longest = [read_results(name, results_dir)["wall_s"].astype(float).max() for name in load_all()]
    longest = [w for w in longest if np.isfinite(w)]
    return max(longest) if longest else None


def parse_until(text: str, now: float | None = None) -> float:
    """``--until``'s deadline as a Unix time: ``"HH:MM"`` (today, or tomorrow if already past) or ``"+MIN"``.

    Raises:
        ValueError: neither form (the message quotes the text).
    """
    now = time.time() if now is None else now
    if re.fullmatch(r"\+\d+(\.\d+)?", text):
        return now + float(text[1:]) * 60
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"--until {text!r}: give a clock time 'HH:MM' or minutes from now '+MIN'")
    t = time.localtime(now)
    for day in (t.tm_mday, t.tm_mday + 1):  # mktime normalises day 32 and finds the date's own DST offset
        at = time.mktime((t.tm_year, t.tm_mon, day, int(m.group(1)), int(m.group(2)), 0, 0, 0, -1))
        if at > now:
            return at
    raise AssertionError("unreachable: tomorrow's clock time is always later")  # pragma: no cover


def _too_late(name: str, unit: str, until: float | None, results_dir, log) -> bool:
    """True when ``unit`` should not start before ``until`` (its guessed length would outlast it); says why."""
    if until is None:
        return False
    guess, left = expected_wall_s(name, unit, results_dir), until - time.time()
    if guess is None:
        log(f"{name}: {unit} left pending: its length is unknown (nothing stored yet) and --until is set")
        return True
    if guess > left:
        log(f"{name}: {unit} left pending: it takes about {guess / 60:.0f} min and {max(left, 0) / 60:.0f} min "
            f"are left before --until")
        return True
    return False


def run_all(scale: str = "full", only: list[str] | None = None, results_dir: Path | None = None,
            log=print, units: str | None = None, until: float | None = None) -> int:
    """Run every pending unit of every registered experiment; returns how many units ran.

    Experiments without a ``group`` run first, in registry order (SynthCity statistics, the
    learning-rate selection). The others are interleaved by group (pretraining seed, then city):
    every unit that consumes one city's and seed's runs comes right after the unit that trains
    them, while they are in the cache. ``only`` names experiments; ``units`` is a glob over unit
    ids (``"synth-ring-*"``). Each unit is checked again just before it runs and claimed while it
    runs (:func:`claim`), so several workers can share one ``results/`` folder; a unit that raises
    :class:`NotReady` is left for a later pass. With ``until`` (a Unix time), a unit whose
    :func:`expected_wall_s` would carry it past that moment, or whose length is unknown, is not
    started: a session that ends then kills no half-done unit, whose CPU time would be lost.
    """

    def waits(name: str, exp: Experiment) -> bool:
        if exp.needs_selection and scale in hparams.SELECTED_SCALES and set(hparams.selected().get(scale, {})) \
                < set(hparams.GRIDS):
            log(f"{name}: waits for the learning-rate selection ({hparams.selected_path()} lacks families); "
                f"{len(pending_units(exp, scale, results_dir))} unit(s) left pending")
            return True
        return False

    exps = [(name, exp) for name, exp in load_all().items() if (not only or name in only) and not waits(name, exp)]
    n = 0
    for name, exp in [(k, e) for k, e in exps if e.group is None]:
        n += _run_units(name, exp, _todo(name, exp, scale, results_dir, units, log), scale, results_dir, log,
                        until=until)
        if name == "selection" and scale in hparams.SELECTED_SCALES and not pending_units(exp, scale, results_dir):
            choice = hparams.write_selected(hparams.candidate_scores(read_results("selection", results_dir)), scale)
            log(f"selection: chosen learning rates at {scale}: {choice} -> {hparams.selected_path()}")
    grouped = []
    for rank, (name, exp) in enumerate(k_e for k_e in exps if k_e[1].group is not None):
        grouped += [(exp.group(c, s), rank, i, name, exp, (u, c, s))
                    for i, (u, c, s) in enumerate(_todo(name, exp, scale, results_dir, units, log))]
    grouped.sort(key=lambda t: t[:3])
    for _, _, _, name, exp, item in tqdm(grouped, desc="grouped units", unit="unit"):
        if until is not None and time.time() >= until:
            log(f"--until reached: {len(grouped)} grouped unit(s) were pending at the start; the rest wait for a later run")
            break
        n += _run_units(name, exp, [item], scale, results_dir, log, bar=False, until=until)
    return n


def _todo(name: str, exp: Experiment, scale: str, results_dir, units: str | None, log) -> list:
    """``exp``'s pending units that match the ``units`` glob (and a line saying what is left)."""
    pending = pending_units(exp, scale, results_dir)
    todo = [t for t in pending if not units or fnmatch.fnmatchcase(t[0], units)]
    skipped = f", {len(pending) - len(todo)} pending left out by --units" if units else ""
    log(f"{name}: {len(todo)} unit(s) to run, {len(exp.plan(scale)) - len(pending)} already stored{skipped}")
    return todo


def _run_units(name: str, exp: Experiment, todo: list, scale: str, results_dir, log, bar: bool = True,
               until: float | None = None) -> int:
    """Run ``todo`` units of one experiment, each claimed and re-checked first; returns how many ran."""
    n = 0
    for unit, config, seed in tqdm(todo, desc=name, unit="unit", disable=not bar):
        if until is not None and time.time() >= until:
            log(f"{name}: --until reached; its other units wait for a later run")
            break
        if _too_late(name, unit, until, results_dir, log):
            continue
        with claim(name, unit, results_dir) as mine:
            if not mine:
                log(f"{name}: {unit} is running in another worker; skipped")
                continue
            if (unit, config, seed) not in pending_units(exp, scale, results_dir):
                log(f"{name}: {unit} was stored meanwhile (another worker); skipped")
                continue
            t0, c0 = time.perf_counter(), cpu_seconds()
            try:
                rows = exp.run(config, seed, scale)
            except NotReady as e:
                log(f"{name}: {unit} not ready ({e}); left pending")
                continue
            append_rows(name, unit, rows, config, seed, scale, time.perf_counter() - t0, results_dir,
                        cpu_s=cpu_seconds() - c0)
            log(f"{name}: {unit} stored ({time.perf_counter() - t0:.0f} s wall, {cpu_seconds() - c0:.0f} CPU-s)")
            n += 1
    return n


NOISE_SE = 3.0  # a re-run may differ from the stored number by this many standard errors (compare_rerun)


def verify_unit(experiment: str, unit: str | None = None, rng_seed: int | None = None,
                results_dir: Path | None = None) -> pd.DataFrame:
    """Re-run one committed unit at its recorded config/seed/scale and compare every metric.

    Picks a random committed unit when ``unit`` is None. Only the experiment's own metric rows are
    compared, not the rows a unit sends to side tables. Returns :func:`compare_rerun`'s frame
    (``match``: within the experiment's rtol; ``within_noise``: within :data:`NOISE_SE` standard
    errors of the unit's own probe-seed noise). Raises AssertionError naming the metrics beyond
    that, or when the means moved together (their average z beyond ``NOISE_SE / sqrt(k)``): a code
    change fails, while the last-bit differences of another CPU's kernels, which a trained probe
    carries into the third decimal, scatter around zero and pass.
    """
    exp = load_all()[experiment]
    stored = read_results(experiment, results_dir)
    if stored.empty:
        raise LookupError(f"no committed rows for experiment {experiment!r}")
    if unit is None:
        unit = random.Random(rng_seed).choice(sorted(stored["unit"].astype(str).unique()))
    rows = stored[stored["unit"].astype(str) == unit]
    first = rows.iloc[0]
    config = json.loads(first["config"])
    with tempfile.TemporaryDirectory() as cache:  # re-run from code: no cached city or encoder may answer
        old = os.environ.get("URBANLIB_CACHE")
        os.environ["URBANLIB_CACHE"] = cache
        try:
            fresh = pd.DataFrame(exp.run(config, int(first["seed"]), str(first["scale"])))
        finally:
            if old is None:
                os.environ.pop("URBANLIB_CACHE", None)
            else:
                os.environ["URBANLIB_CACHE"] = old
    if "table" in fresh:  # side-table rows (pretraining facts, n/a reasons) carry no metric to compare
        fresh = fresh[fresh["table"].isna()]
    both = compare_rerun(rows, fresh, exp.rtol, exp.atol, get_scale(str(first["scale"])).probe_seeds)
    bad = both[~both["within_noise"]]
    if len(bad):
        raise AssertionError(f"{experiment}/{unit}: {len(bad)} metric(s) drifted beyond {NOISE_SE:g} standard errors "
                             f"of the probe-seed noise (and rtol={exp.rtol}):\n{bad.to_string(index=False)}")
    z = both.loc[both["metric"].astype(str).str.endswith("_mean"), "z"].dropna()
    if len(z) and abs(z.mean()) > NOISE_SE / np.sqrt(len(z)):
        raise AssertionError(f"{experiment}/{unit}: the means moved together, by {z.mean():+.2f} standard errors on "
                             f"average over {len(z)} (noise would stay within ±{NOISE_SE / np.sqrt(len(z)):.2f})")
    return both


def compare_rerun(stored: pd.DataFrame, fresh: pd.DataFrame, rtol: float, atol: float,
                  probe_seeds: int) -> pd.DataFrame:
    """Stored against re-run values, one row per (city, model, task, metric).

    ``match``: equal within ``rtol``/``atol``. ``z``: the difference in standard errors, for a mean
    over the ``probe_seeds`` probe seeds (``*_mean``: the stored ``*_std`` / sqrt(seeds)) and for that
    std itself (``*_std``: a sample std's, std / sqrt(2 (seeds - 1))). ``within_noise``: a match, or
    ``|z| <=`` :data:`NOISE_SE`. Other metrics (counts, single values) must match. A metric on one
    side only is neither.
    """
    key = ["city", "model", "task", "metric"]
    both = stored[key + ["value"]].merge(fresh[key + ["value"]], on=key, how="outer",
                                         suffixes=("_stored", "_rerun"))
    a, b = both["value_stored"].astype(float), both["value_rerun"].astype(float)
    both["match"] = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    metric = both["metric"].astype(str)
    stds = stored[stored["metric"].astype(str).str.endswith("_std")]
    std_of = {(r.city, r.model, r.task, r.metric[: -len("_std")]): float(r.value) for r in stds.itertuples()}
    base = metric.str.replace(r"_(mean|std)$", "", regex=True)
    std = pd.Series([std_of.get((c, m, t, x), np.nan) for c, m, t, x in
                     zip(both["city"], both["model"], both["task"], base, strict=True)], index=both.index)
    n = max(int(probe_seeds), 2)
    se = np.where(metric.str.endswith("_mean"), std / np.sqrt(n),
                  np.where(metric.str.endswith("_std"), std / np.sqrt(2 * (n - 1)), np.nan))
    both["z"] = (b - a) / np.where(se > 0, se, np.nan)
    both["within_noise"] = both["match"] | (both["z"].abs() <= NOISE_SE)
    return both
