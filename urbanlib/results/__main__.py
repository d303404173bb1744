"""``python -m urbanlib.results run|verify|list|budget`` — the resumable ``full`` results tier.

python -m urbanlib.results run --scale full          # what `make results` runs; resumable
python -m urbanlib.results run --until 18:30          # start no unit that would not end by 18:30
python -m urbanlib.results run --background           # yield the CPU to everything else (a second worker)
python -m urbanlib.results verify --random            # re-run one committed unit and compare
python -m urbanlib.results budget                     # CPU-hours stored and projected, against the budget
"""

from __future__ import annotations

import argparse
import random
import sys

from urbanlib.scales import get_scale

from .runner import parse_until, pending_units, run_all, verify_unit, yield_cpu
from .store import read_results
from .tier import load_all
from .views import TIER_BUDGET_CPU_H, cpu_budget


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m urbanlib.results", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "verify", "list", "budget"])
    ap.add_argument("--scale", default="full")
    ap.add_argument("--only", action="append", help="experiment name (repeatable)")
    ap.add_argument("--units", help="run: only units whose id matches this glob (e.g. 'synth-ring-*')")
    ap.add_argument("--until", help="run: start no unit that would not end by then ('HH:MM' or '+MIN'); "
                                    "each unit's length is guessed from the stored wall times of its kind")
    ap.add_argument("--background", action="store_true",
                    help="run: take only the CPU everything else leaves (nice 19, and the Linux autogroup too)")
    ap.add_argument("--experiment", help="verify: which experiment (default: drawn at random)")
    ap.add_argument("--unit", help="verify: which unit (default: drawn at random)")
    ap.add_argument("--random", action="store_true", help="verify: draw experiment and unit at random")
    ap.add_argument("--seed", type=int, default=None, help="verify: seed of the random draw")
    args = ap.parse_args(argv)
    try:
        get_scale(args.scale)
    except KeyError as e:
        ap.error(f"--scale: {e.args[0]}")
    exps = load_all()
    if args.command == "list":
        for name, exp in exps.items():
            print(f"{name}: {len(exp.plan(args.scale))} unit(s), {len(pending_units(exp, args.scale))} pending "
                  f"- {exp.description}")
        return 0
    if args.command == "budget":
        table = cpu_budget(args.scale)
        print(table.to_string())
        print(f"budget: {TIER_BUDGET_CPU_H:g} CPU-h for the whole tier; projected "
              f"{table.loc['total', 'tier CPU-h (projected)']:.1f} CPU-h")
        return 0
    if args.command == "run":
        try:
            until = parse_until(args.until) if args.until else None
        except ValueError as e:
            ap.error(str(e))
        if args.background:
            print(f"results: running in the background ({yield_cpu()})")
        run_all(args.scale, args.only, units=args.units, until=until)
        return 0

    rng = random.Random(args.seed)
    names = [args.experiment] if args.experiment else [n for n in exps if not read_results(n).empty]
    if not names:
        print("verify: no committed results yet; nothing to check")
        return 0
    name = rng.choice(sorted(names))
    table = verify_unit(name, args.unit, rng_seed=rng.randrange(2**31))
    z = table["z"].dropna()
    print(f"verify {name}: {int(table['match'].sum())}/{len(table)} metric(s) match the committed values within "
          f"rtol; {int(table['within_noise'].sum())}/{len(table)} within the probe-seed noise"
          + (f" (largest |z| {z.abs().max():.2f}, mean z of the means "
             f"{table.loc[table['metric'].str.endswith('_mean'), 'z'].mean():+.3f})" if len(z) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
