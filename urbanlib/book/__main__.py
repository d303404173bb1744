"""``python -m urbanlib.book run|build|store`` — execute the manifest and build the HTML book.

Examples:
    python -m urbanlib.book build --scale default        # what `make book` runs
    python -m urbanlib.book run --only data --force       # re-execute one experiment
    python -m urbanlib.book store --only benchmark        # execute and commit-ready store the stored pages
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from urbanlib.cache import REPO_ROOT, cache_dir, cache_root

from .manifest import ManifestError, load_manifest
from .reading import unexpected_log_lines
from .runner import NotebookFailed, data_absent, run_entries
from .stored import place_stored, store_entries
from .toc import write_toc


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m urbanlib.book", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "build", "store"],
                    help="run: execute the live pages; build: run + place the stored pages + jupyter-book; "
                         "store: execute the manifest's stored pages into results/pages/<scale>/")
    ap.add_argument("--scale", default="default", help="scale preset passed to every notebook (smoke/default/full/paper)")
    ap.add_argument("--manifest", default=str(REPO_ROOT / "notebooks" / "runs.yml"))
    ap.add_argument("--root", default=str(REPO_ROOT),
                    help="book root holding _config.yml (and where _toc.yml is written)")
    ap.add_argument("--only", action="append", help="run only these experiment keys (repeatable)")
    ap.add_argument("--force", action="store_true", help="re-execute even when inputs are unchanged")
    ap.add_argument("--strict-log", action="store_true",
                    help="fail when the jupyter-book log has a line outside the allowlist (urbanlib/book/reading.py)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="pages of one experiment executed at once (default: 2 or the CPU count if lower)")
    return ap


def main(argv=None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    root = Path(args.root)
    t0 = time.perf_counter()
    try:
        entries = load_manifest(args.manifest, args.scale)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    entries = _runnable([e for e in entries if not args.only or e.experiment in args.only])
    stored = [e for e in entries if e.stored]
    try:
        if args.command == "store":
            store_entries(stored, root, args.scale, force=args.force)
            print(f"{len(stored)} stored page(s) under {root / 'results' / 'pages' / args.scale} "
                  f"({time.perf_counter() - t0:.0f} s)")
            return 0
        ran = run_entries([e for e in entries if not e.stored], root / "book" / "generated", cache_dir("book"),
                          force=args.force, jobs=args.jobs)
    except NotebookFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    placed = place_stored(stored, root, args.scale, root / "book" / "generated")
    _report_stored(placed)
    by_slug = {r.entry.slug: r for r in ran + placed}
    results = [by_slug[e.slug] for e in entries]
    write_toc(results, root, parts_of=_parts(args.manifest))
    timings = {r.entry.slug: {"status": r.status, "seconds": round(r.seconds, 1)} for r in results}
    (cache_root() / "book_timings.json").write_text(json.dumps(timings, indent=2))
    print(f"executed {sum(r.status == 'ran' for r in results)} notebook(s), "
          f"{sum(r.status == 'cached' for r in results)} cached, "
          f"{sum(r.status in ('stored', 'stale') for r in results)} stored, in {time.perf_counter() - t0:.0f} s")
    if args.command == "run":
        return 0
    code = _jupyter_book(root, args.strict_log)
    if code == 0:
        print(f"book built: {root / '_build' / 'html' / 'index.html'} ({time.perf_counter() - t0:.0f} s in all)")
    return code


def _runnable(entries: list) -> list:
    """The entries less the live pages whose data is absent here (each skip is said, with why)."""
    out = []
    for e in entries:
        why = None if e.stored else data_absent(e)
        if why:
            print(f"skipped {e.slug}: {why}")
        else:
            out.append(e)
    return out


def _parts(manifest: str | Path) -> dict[str, str]:
    """Experiment key -> the book part it is filed under (its own key unless the manifest says ``part``)."""
    doc = yaml.safe_load(Path(manifest).read_text())
    keys = {(x.get("key") or Path(x["notebook"]).stem): x for x in doc["experiments"]}
    return {k: x.get("part", k) for k, x in keys.items()}


def _report_stored(placed: list) -> None:
    """Say which stored pages are missing or ran with older code (their banners say so too)."""
    missing = [r.entry.slug for r in placed if r.status == "missing"]
    if missing:
        print(f"note: {len(missing)} stored page(s) not stored yet (run `make pages`): {', '.join(missing)}")
    stale = [r.entry.slug for r in placed if r.status == "stale"]
    if stale:
        print(f"note: {len(stale)} stored page(s) ran with an earlier notebook or library code; their banners say "
              f"so (run `make pages` to refresh): {', '.join(stale)}")


def _jupyter_book(root: Path, strict_log: bool) -> int:
    """``jupyter-book build`` (warnings are errors), then its log held against the allowlist; the exit code."""
    jb = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "--toc", str(root / "_toc.yml"),
          "--config", str(root / "_config.yml"), "-W", "-n", "--keep-going"]
    returncode, log_lines = _run_logged(jb, root)
    if returncode != 0:
        print("error: jupyter-book build failed (warnings are errors); see the messages above", file=sys.stderr)
        return returncode
    unexpected = unexpected_log_lines(log_lines)
    if unexpected:  # new warnings or noise: shown, kept beside the book, and an error with --strict-log
        (root / "_build").mkdir(exist_ok=True)
        (root / "_build" / "build-log-unexpected.txt").write_text("\n".join(unexpected) + "\n")
        print(f"build log: {len(unexpected)} line(s) outside the allowlist (LOG_ALLOWLIST in "
              "urbanlib/book/reading.py; kept in _build/build-log-unexpected.txt):", file=sys.stderr)
        for line in unexpected[:40]:
            print(f"  | {line}", file=sys.stderr)
        if strict_log:
            return 1
    return 0


def _run_logged(cmd: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run ``cmd``, echoing its merged output line by line; returns (exit code, lines)."""
    lines = []
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
    return proc.returncode, lines


if __name__ == "__main__":
    sys.exit(main())
