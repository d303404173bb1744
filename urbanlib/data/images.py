"""Opening images safely and checking every image a dataset points at.

Policies (counted in the report by :func:`check_images`, each entry naming the files):

* a path that leaves the dataset folder (``../x.png``, an absolute path, a symlink pointing out)
  -> the row is dropped (``image_outside_root``, skipped); the file is never opened.
* missing file -> the image row is dropped (``missing_image``, skipped); its region stays.
* more than ``max_pixels`` pixels (a decompression bomb or a whole-scene raster) -> dropped before
  decoding (``image_too_large``, skipped).
* unreadable or truncated file (PIL cannot fully decode it) -> dropped (``unreadable_image``, skipped).
* non-RGB mode (L, P, RGBA, CMYK, I;16 ...) -> kept; :func:`open_rgb` converts to RGB on every
  open (``non_rgb_image``, kept). RGBA is composited by dropping alpha, as PIL's ``convert`` does.
* unexpected size (not ``expected_size``) -> kept and flagged (``unexpected_image_size``); model
  transforms resize anyway, and silently resizing on disk would change the data. Pass ``size`` to
  :func:`open_rgb` to get a fixed size (bicubic resize, no crop).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from .report import DataError, LoadReport

EXPECTED_SIZE = (256, 256)  # UrbanCLIP's Baidu tiles
# 40 M pixels (a 6300 x 6300 image) is 600x a 256 px tile and under PIL's own bomb limit (89 M,
# which only warns); decoding one costs 120 MB of RGB, so a tile larger than this is not a tile
MAX_PIXELS = 40_000_000


def _decode(path: Path, max_pixels: int) -> Image.Image:
    """Open and fully decode ``path``; DataError for a missing, oversized or undecodable file.

    Any exception of a decoder counts as "cannot read" (PIL's plugins raise OSError, SyntaxError,
    ValueError, struct errors, IndexError ... on damaged files): the message names the file.
    """
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: image too large (over PIL's decompression-bomb limit); not decoded") from None
    except Exception as e:  # noqa: BLE001  (any decoder failure is an unreadable file)
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise DataError(f"{path}: image too large ({w}x{h} = {w * h} pixels > {max_pixels}); not decoded")
        try:
            im.load()  # force a full decode: truncated files fail here, not in a DataLoader worker
            return im.copy()
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def resolve_inside(root: str | Path, relative) -> Path | None:
    """``root / relative`` resolved (symlinks followed) if it stays inside ``root``, else None."""
    if not isinstance(relative, (str, Path)) or not str(relative).strip() or "\x00" in str(relative):
        return None
    base = Path(root).resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return target if target == base or base in target.parents else None


def open_rgb(path: str | Path, size: tuple[int, int] | None = None, report: LoadReport | None = None,
             max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image fully decoded, as RGB, optionally resized to ``size`` (width, height).

    Raises:
        DataError: the file is missing, not an image, truncated or larger than ``max_pixels``
            (the message names the file).
    """
    path = Path(path)
    im = _decode(path, max_pixels)
    mode = im.mode
    try:
        rgb = im.convert("RGB") if mode != "RGB" else im
    except Exception as e:  # noqa: BLE001  (e.g. a mode PIL cannot convert)
        raise DataError(f"{path}: cannot convert image mode {mode} to RGB ({type(e).__name__}: {e})") from None
    if mode != "RGB" and report is not None:
        report.add("non_rgb_image", "kept", 1, "image not in RGB mode; converted to RGB on open", [f"{path} ({mode})"])
    if size is not None and rgb.size != tuple(size):
        rgb = rgb.resize(tuple(size), Image.Resampling.BICUBIC)
    return rgb


def inspect_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> dict:
    """Decode one image and describe it: ``ok``, ``error``, ``mode``, ``width``, ``height``.

    ``error`` is ``""``, ``"missing"``, ``"too_large: ..."`` or the decoder's message.
    """
    path = Path(path)
    if not path.is_file():
        return {"ok": False, "error": "missing", "mode": None, "width": None, "height": None}
    try:
        im = _decode(path, max_pixels)
    except DataError as e:
        msg = str(e).removeprefix(f"{path}: ")
        kind = "too_large: " if msg.startswith("image too large") else ""
        return {"ok": False, "error": kind + msg, "mode": None, "width": None, "height": None}
    return {"ok": True, "error": "", "mode": im.mode, "width": im.width, "height": im.height}


def check_images(ds, report: LoadReport | None = None, expected_size: tuple[int, int] | None = EXPECTED_SIZE,
                 progress: bool | None = None, max_pixels: int = MAX_PIXELS, annotate: bool = True):
    """Decode every image of ``ds`` once, dropping the ones that cannot be used and counting why.

    Rows outside the dataset, missing, oversized or unreadable are dropped; odd modes and sizes are
    flagged (see the module's policies).

    Args:
        ds: an :class:`UrbanDataset`; paths are relative to ``ds.root`` and must stay inside it.
        report: where counts go (default ``ds.report``).
        expected_size: (width, height) every image should have; None skips the size check.
        progress: show a tqdm bar (default: when there are more than 500 images and stderr is a terminal;
            batch jobs and logs stay quiet).
        max_pixels: images with more pixels are skipped without being decoded.
        annotate: add ``width``, ``height`` and ``mode`` columns to ``ds.images``.

    Returns:
        ``ds`` (same object, ``ds.images`` replaced), for chaining.
    """
    report = ds.report if report is None else report
    images = ds.images.reset_index(drop=True)
    show = (len(images) > 500 and sys.stderr.isatty()) if progress is None else progress
    where = [str(p) for p in images["path"]]
    info = []
    for p in tqdm(images["path"], desc="checking images", disable=not show):
        target = resolve_inside(ds.root, p)
        if target is None:
            info.append({"ok": False, "error": "outside", "mode": None, "width": None, "height": None})
        else:
            info.append(inspect_image(target, max_pixels))
    info = pd.DataFrame(info, index=images.index, columns=["ok", "error", "mode", "width", "height"])
    error = info["error"].fillna("").astype(str)

    outside = (error == "outside").to_numpy()
    report.add("image_outside_root", "skipped", int(outside.sum()),
               f"image path leaves the dataset folder {ds.root} (.., an absolute path or a symlink out); "
               "never opened", [w for w, m in zip(where, outside, strict=True) if m])
    missing = (error == "missing").to_numpy()
    report.add("missing_image", "skipped", int(missing.sum()), f"image file not found under {ds.root}",
               [w for w, m in zip(where, missing, strict=True) if m])
    large = error.str.startswith("too_large").to_numpy()
    report.add("image_too_large", "skipped", int(large.sum()), f"image has more than {max_pixels} pixels; not decoded",
               [f"{w} ({e.removeprefix('too_large: ')})" for w, e, b in zip(where, error, large, strict=True) if b])
    ok = info["ok"].fillna(False).to_numpy(dtype=bool)
    broken = ~ok & ~outside & ~missing & ~large
    report.add("unreadable_image", "skipped", int(broken.sum()), "image cannot be decoded (corrupt or truncated)",
               [f"{w} ({e})" for w, e, b in zip(where, error, broken, strict=True) if b])
    odd_mode = ok & (info["mode"] != "RGB").to_numpy()
    report.add("non_rgb_image", "kept", int(odd_mode.sum()), "image not in RGB mode; open_rgb converts it",
               [f"{w} ({m})" for w, m, b in zip(where, info["mode"], odd_mode, strict=True) if b])
    if expected_size is not None:
        w_, h_ = expected_size
        odd_size = ok & ~((info["width"] == w_) & (info["height"] == h_)).to_numpy()
        report.add("unexpected_image_size", "flagged", int(odd_size.sum()),
                   f"image is not {w_}x{h_}; kept (transforms resize); pass size= to open_rgb for a fixed size",
                   [f"{w} ({a}x{b})" for w, a, b, s in zip(where, info["width"], info["height"], odd_size,
                                                            strict=True) if s])
    if annotate:
        images = images.assign(width=info["width"], height=info["height"], mode=info["mode"])
    ds.images = images if ok.all() else images.loc[ok].reset_index(drop=True)
    return ds
