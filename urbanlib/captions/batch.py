"""Caption a whole dataset into a JSONL file that survives crashes.

Each finished caption is appended as one JSON line, flushed and fsynced before the next batch
starts. A rerun reads the file, skips every finished (image, source, style, prompt) key and
continues; a line torn by a crash mid-write (no trailing newline, or not JSON) is cut off and its
image captioned again. So a crash repeats no finished work and loses none.

One writer per file: :func:`caption_dataset` holds an exclusive lock (``.<name>.lock`` beside the
file) from reading the finished keys to its last write, so a second process waits and then skips
what the first wrote. An image that cannot be decoded is recorded in ``<name>.failures.jsonl``,
skipped, and the run goes on; the run then ends with a :class:`CaptionError` naming those images.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ..cache import file_lock
from ..data.images import open_rgb, resolve_inside
from ..data.report import DataError
from .backends import Captioner, CaptionError
from .prompts import default_prompt, prompt_hash

RECORD_FIELDS = ("region_id", "image", "source", "style", "prompt_hash", "text", "created")


def record_key(rec: dict) -> tuple[str, str, str, str]:
    """What makes a caption unique: (image path, source, style, prompt hash)."""
    return rec["image"], rec["source"], rec["style"], rec["prompt_hash"]


def _repair_tail(path: Path) -> None:
    """Cut off a last line torn by a crash (no newline and not a complete record); keep a whole one."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        # read back to the previous newline (records are small; read the whole tail chunk by chunk)
        pos, tail = size, b""
        while pos > 0 and b"\n" not in tail:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
    cut = pos + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
    last = tail[tail.rfind(b"\n") + 1:] if b"\n" in tail else tail
    try:
        rec = json.loads(last)
        complete = isinstance(rec, dict) and all(k in rec for k in RECORD_FIELDS)
    except (json.JSONDecodeError, UnicodeDecodeError):
        complete = False
    if complete:  # only the newline was lost
        with open(path, "ab") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
    else:
        os.truncate(path, cut)


def read_records(path: str | Path, repair: bool = False) -> list[dict]:
    """The caption records of a JSONL file written by :func:`caption_dataset`.

    Args:
        path: the JSONL file (missing file: no records).
        repair: cut off a torn last line in the file itself (what a resumed run does); without it a
            torn last line is skipped in memory and the file is left alone.

    Raises:
        DataError: a line other than the last is not a JSON record with the fields of
            :data:`RECORD_FIELDS` (the message gives file and line number).
    """
    path = Path(path)
    if not path.is_file():
        return []
    if repair:
        _repair_tail(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    torn = lines[-1] != ""  # text after the last newline: a torn line, skipped when not repairing
    if not torn:
        lines.pop()
    records = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
            missing = [k for k in RECORD_FIELDS if k not in rec]
            if missing:
                raise ValueError(f"missing field(s) {missing}")
        except ValueError as e:
            if torn and no == len(lines):
                continue
            raise DataError(f"{path}:{no}: corrupt caption record ({e}); fix or delete this line") from None
        records.append(rec)
    return records


def load_captions(path: str | Path) -> pd.DataFrame:
    """A caption JSONL as a table with the columns of ``UrbanDataset.captions`` plus provenance."""
    recs = read_records(path)
    return pd.DataFrame(recs, columns=list(RECORD_FIELDS) + sorted({k for r in recs for k in r} - set(RECORD_FIELDS)))


def _write(f, rec: dict) -> None:
    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def failures_path(out_jsonl: str | Path) -> Path:
    """Where :func:`caption_dataset` records the images it could not read: ``<name>.failures.jsonl``."""
    out = Path(out_jsonl)
    return out.with_name(out.stem + ".failures.jsonl")


@contextmanager
def writer_lock(out_jsonl: str | Path):
    """Hold the exclusive writer lock of a caption file (blocks while another writer holds it)."""
    out = Path(out_jsonl)
    with file_lock(out.with_name(f".{out.name}.lock")):
        yield


def caption_dataset(ds, captioner: Captioner, out_jsonl: str | Path, prompt: str | None = None,
                    kind: str = "satellite", style: str | None = None, progress: bool = True,
                    batch_size: int | None = None) -> Path:
    """Caption every ``kind`` image of a dataset with one captioner, appending to ``out_jsonl``.

    Resumable: records already in ``out_jsonl`` under the same (image, source, style, prompt hash)
    are skipped. Each record holds ``region_id``, ``image`` (path relative to ``ds.root``), ``source``
    (captioner name), ``style``, ``prompt_hash``, ``text`` and ``created`` (UTC, ISO 8601).

    Args:
        ds: an :class:`~urbanlib.data.UrbanDataset` (its ``images`` table and ``root``).
        captioner: any :class:`~urbanlib.captions.backends.Captioner`.
        out_jsonl: output file; created if missing, appended to otherwise.
        prompt: the instruction (default: the paper prompt for ``style`` and ``kind``).
        kind: ``"satellite"`` or ``"street"`` images.
        style: ``"short"`` or ``"long"`` label of the captions (default: the simulated captioner's
            style, else ``"long"``).
        progress: show a tqdm bar.
        batch_size: images per captioner call (default ``captioner.batch_size``).

    Returns:
        ``out_jsonl`` as a Path.

    Raises:
        CaptionError: a caption failed; the captions finished before it (and those of the same
            batch that succeeded) are already on disk, so rerunning resumes. Or, at the end, some
            images could not be read (missing, truncated, too large): they are named, recorded in
            :func:`failures_path` and skipped, and every other image is captioned.
        DataError: ``out_jsonl`` has a corrupt line.
    """
    out = Path(out_jsonl)
    out.parent.mkdir(parents=True, exist_ok=True)
    sim_style = getattr(captioner, "style", None)
    style = style or sim_style or "long"
    if sim_style is not None and sim_style != style:
        raise ValueError(f"{captioner.name} writes {sim_style!r} captions, not {style!r}")
    prompt = default_prompt(style, kind) if prompt is None else prompt
    ph = prompt_hash(prompt)
    with writer_lock(out):
        bad = _caption_locked(ds, captioner, out, prompt, ph, kind, style, progress, batch_size)
    if bad:
        raise CaptionError(f"{captioner.name}: {len(bad)} image(s) could not be read and were skipped (recorded in "
                           f"{failures_path(out)}; every other image is captioned): " + " | ".join(bad[:10]))
    return out


def _caption_locked(ds, captioner, out: Path, prompt: str, ph: str, kind: str, style: str, progress: bool,
                    batch_size) -> list[str]:
    """The body of :func:`caption_dataset`, under the writer lock; returns the unreadable images' errors."""
    done = {record_key(r) for r in read_records(out, repair=True)}
    imgs = ds.images[ds.images["kind"] == kind].drop_duplicates("path")
    todo = [(str(r.region_id), str(r.path)) for r in imgs.itertuples(index=False)
            if (str(r.path), captioner.name, style, ph) not in done]
    bs = int(batch_size or captioner.batch_size)
    bar = tqdm(total=len(imgs), initial=len(imgs) - len(todo), desc=f"captions {captioner.name}",
               disable=not progress, leave=False)
    unreadable: list[str] = []
    try:
        with open(out, "a", encoding="utf-8") as f:
            for start in range(0, len(todo), bs):
                chunk, images = [], []
                for rid, path in todo[start:start + bs]:
                    try:  # fully decoded here: a bad file is this image's failure, not the batch's
                        full = resolve_inside(ds.root, path)
                        if full is None:  # never read, never sent to a server
                            raise DataError(f"{path}: image path leaves the dataset folder {ds.root}; not read")
                        im = open_rgb(full)
                        im.filename = str(full)  # the simulated captioners look the scene up by file name
                        images.append(im)
                        chunk.append((rid, path))
                    except DataError as e:
                        unreadable.append(str(e))
                        _record_failure(out, path, captioner.name, style, ph, str(e))
                if not chunk:
                    continue
                try:
                    texts: list[str | None] = list(captioner.caption(images, prompt))
                    failure = None
                except CaptionError as e:  # keep what succeeded, then stop
                    texts, failure = list(e.partial or [None] * len(chunk)), e
                finally:
                    for im in images:
                        im.close()
                if len(texts) != len(chunk):
                    raise CaptionError(f"{captioner.name} returned {len(texts)} captions for {len(chunk)} images")
                for (rid, path), text in zip(chunk, texts, strict=True):
                    if text is None:
                        continue
                    if not str(text).strip():
                        raise CaptionError(f"{captioner.name}: empty caption for {path}")
                    _write(f, {"region_id": rid, "image": path, "source": captioner.name, "style": style,
                               "prompt_hash": ph, "text": text,
                               "created": datetime.now(UTC).isoformat(timespec="seconds")})
                    bar.update(1)
                if failure is not None:
                    raise failure
    finally:
        bar.close()
    return unreadable


def _record_failure(out: Path, image: str, source: str, style: str, ph: str, error: str) -> None:
    with open(failures_path(out), "a", encoding="utf-8") as f:
        _write(f, {"image": image, "source": source, "style": style, "prompt_hash": ph, "error": error,
                   "created": datetime.now(UTC).isoformat(timespec="seconds")})
