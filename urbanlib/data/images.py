"""Opening images safely and checking every image a dataset points at.

Policies (counted in the report by :func:`check_images`):

* missing file -> the image row is dropped (``missing_image``, skipped); its region stays.
* unreadable or truncated file (PIL cannot fully decode it) -> dropped (``unreadable_image``, skipped).
* non-RGB mode (L, P, RGBA, CMYK, I;16 ...) -> kept; :func:`open_rgb` converts to RGB on every
  open (``non_rgb_image``, kept). RGBA is composited by dropping alpha, as PIL's ``convert`` does.
* unexpected size (not ``expected_size``) -> kept and flagged (``unexpected_image_size``); model
  transforms resize anyway, and silently resizing on disk would change the data. Pass ``size`` to
  :func:`open_rgb` to get a fixed size (bicubic resize, no crop).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from .report import DataError, LoadReport

EXPECTED_SIZE = (256, 256)  # UrbanCLIP's Baidu tiles


def open_rgb(path: str | Path, size: tuple[int, int] | None = None, report: LoadReport | None = None) -> Image.Image:
    """Open an image fully decoded, as RGB, optionally resized to ``size`` (width, height).

    Raises:
        DataError: the file is missing, not an image, or truncated (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()  # force a full decode: truncated JPEGs fail here, not in a DataLoader worker
            mode = im.mode
            rgb = im.convert("RGB") if mode != "RGB" else im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if mode != "RGB" and report is not None:
        report.add("non_rgb_image", "kept", 1, "image not in RGB mode; converted to RGB on open", [f"{path} ({mode})"])
    if size is not None and rgb.size != tuple(size):
        rgb = rgb.resize(tuple(size), Image.Resampling.BICUBIC)
    return rgb


def inspect_image(path: str | Path) -> dict:
    """Decode one image and describe it: ``ok``, ``error``, ``mode``, ``width``, ``height``."""
    path = Path(path)
    if not path.is_file():
        return {"ok": False, "error": "missing", "mode": None, "width": None, "height": None}
    try:
        with Image.open(path) as im:
            im.load()
            return {"ok": True, "error": "", "mode": im.mode, "width": im.width, "height": im.height}
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "mode": None, "width": None, "height": None}


def check_images(ds, report: LoadReport | None = None, expected_size: tuple[int, int] | None = EXPECTED_SIZE,
                 progress: bool | None = None):
    """Decode every image of ``ds``; drop missing/unreadable rows, flag odd modes and sizes.

    Adds ``width``, ``height`` and ``mode`` columns to ``ds.images`` and replaces it in place.

    Args:
        ds: an :class:`UrbanDataset`; paths are relative to ``ds.root``.
        report: where counts go (default ``ds.report``).
        expected_size: (width, height) every image should have; None skips the size check.
        progress: show a tqdm bar (default: when there are more than 500 images).

    Returns:
        ``ds`` (same object), for chaining.
    """
    from tqdm import tqdm

    report = ds.report if report is None else report
    images = ds.images.reset_index(drop=True)
    show = len(images) > 500 if progress is None else progress
    info = [inspect_image(ds.root / p) for p in tqdm(images["path"], desc="checking images", disable=not show)]
    info = pd.DataFrame(info, index=images.index)
    where = [str(p) for p in images["path"]]

    missing = (info["error"] == "missing").to_numpy()
    report.add("missing_image", "skipped", int(missing.sum()), f"image file not found under {ds.root}",
               [w for w, m in zip(where, missing, strict=True) if m])
    broken = (~info["ok"] & ~(info["error"] == "missing")).to_numpy()
    report.add("unreadable_image", "skipped", int(broken.sum()), "image cannot be decoded (corrupt or truncated)",
               [f"{w} ({e})" for w, e, b in zip(where, info["error"], broken, strict=True) if b])
    ok = info["ok"].to_numpy(dtype=bool)
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
    images = images.assign(width=info["width"], height=info["height"], mode=info["mode"])
    ds.images = images.loc[ok].reset_index(drop=True)
    return ds
