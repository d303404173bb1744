"""``python -m urbanlib.city build config.yml``: build a city dataset from raw geodata.

Prints the dataset folder, what the build skipped or flagged, and how long each step took; the
folder then loads with ``urbanlib.data.load(path)`` and runs the book's notebooks
(``papermill notebooks/data.ipynb out.ipynb -p data_dir <folder> -p city <city>``).
"""

from __future__ import annotations

import argparse
import json
import sys

from .data import load
from .data.report import DataError
from .geo import build_city, load_config


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 on a data error, with its message)."""
    p = argparse.ArgumentParser(prog="python -m urbanlib.city", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the dataset a config file describes")
    b.add_argument("config", help="YAML or JSON config (see urbanlib.geo.config)")
    b.add_argument("--out", default=None, help="output folder (default: the config's `out`)")
    b.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    b.add_argument("--progress", action="store_true", help="show a progress bar while cutting tiles")
    c = sub.add_parser("check", help="validate a config file without building")
    c.add_argument("config")
    args = p.parse_args(argv)

    try:
        if args.cmd == "check":
            cfg = load_config(args.config)
            print(f"{args.config}: ok (city {cfg.city}, {cfg.regions.kind} regions, "
                  f"{len(cfg.indicators)} indicator raster(s))")
            return 0
        path = build_city(args.config, out=args.out, force=args.force, progress=args.progress)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ds = load(path)
    print(path)
    print(ds)
    print(ds.report)
    meta = json.loads((path / "meta.json").read_text())
    build = meta.get("build_report", [])
    if build:
        print("build report:")
        for e in build:
            print(f"  {e['action']:8s} {e['count']:6d}  {e['kind']}: {e['detail']}")
    print("build seconds:", meta.get("build_seconds"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
