"""A dataset's images as tensors, decoded once and cached on disk.

Every model reads the same arrays: satellite tiles ``(N, 3, S, S)`` and up to ``V`` street views
per region ``(N, V, 3, s, s)`` with a validity mask, in region-table order. Pixels are stored as
uint8 and normalised on access with CLIP's mean and std, the statistics open_clip's towers expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from urbanlib.cache import atomic_write, cache_dir, stable_hash
from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.images import open_rgb
from urbanlib.data.report import DataError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class RegionTensors:
    """Images of one dataset as uint8 arrays, aligned with ``ds.regions``.

    Attributes:
        region_ids: (N,) region ids, the dataset's table order.
        satellite: (N, 3, S, S) uint8; zeros where ``satellite_mask`` is False.
        satellite_mask: (N,) bool, the region has a satellite tile.
        street: (N, V, 3, s, s) uint8; zeros where ``street_mask`` is False (V may be 0).
        street_mask: (N, V) bool, which street-view slots hold an image.
    """

    region_ids: np.ndarray
    satellite: np.ndarray
    satellite_mask: np.ndarray
    street: np.ndarray
    street_mask: np.ndarray
    key: str = ""  # content hash of the images read (cache keys of features derive from it)

    def __len__(self) -> int:
        return len(self.region_ids)

    def satellite_tensor(self, idx=None) -> torch.Tensor:
        """CLIP-normalised float satellite images (n, 3, S, S) for positions ``idx`` (all if None)."""
        x = self.satellite if idx is None else self.satellite[np.asarray(idx)]
        return normalize(torch.from_numpy(x))

    def street_tensor(self, idx=None) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-normalised street views (n, V, 3, s, s) and their (n, V) bool mask."""
        sel = slice(None) if idx is None else np.asarray(idx)
        x = torch.from_numpy(self.street[sel])
        return normalize(x), torch.from_numpy(self.street_mask[sel])

    @property
    def has_street(self) -> np.ndarray:
        """(N,) bool: the region has at least one street view."""
        return self.street_mask.any(axis=1) if self.street_mask.size else np.zeros(len(self), bool)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def _image_key(ds: UrbanDataset, tile_px: int, street_px: int, max_views: int) -> str:
    rows = []
    for _, r in ds.images.iterrows():
        p = ds.root / r["path"]
        st = p.stat() if p.exists() else None
        rows.append((r["region_id"], r["kind"], str(r["path"]), st.st_size if st else -1,
                     int(st.st_mtime) if st else -1))
    return stable_hash({"root": str(ds.root.resolve()), "ids": list(map(str, ds.region_ids)), "images": rows,
                        "tile_px": tile_px, "street_px": street_px, "max_views": max_views})


def _read(path: Path, size: int) -> np.ndarray:
    return np.asarray(open_rgb(path, size=(size, size)), dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)


def load_tensors(ds: UrbanDataset, tile_px: int, street_px: int | None = None, max_views: int = 4,
                 cache: bool = True, progress: bool = True) -> RegionTensors:
    """Decode (or read from cache) every image of ``ds`` at a fixed size.

    Args:
        ds: any loaded dataset (SynthCity or real).
        tile_px: satellite side in pixels; tiles of other sizes are resized (bicubic).
        street_px: street-view side (default ``tile_px``).
        max_views: street views kept per region (the first ones in table order).
        cache: reuse/write ``$URBANLIB_CACHE/tensors/<key>.npz``; the key covers region ids,
            image paths, file sizes and mtimes, so edited data is re-read.
        progress: show a progress bar while decoding.

    Raises:
        DataError: an image cannot be read (the message names the file).
    """
    street_px = street_px or tile_px
    key = _image_key(ds, tile_px, street_px, max_views)
    path = cache_dir("tensors") / f"{key}.npz" if cache else None
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=False)
        return RegionTensors(z["region_ids"].astype(object), z["satellite"], z["satellite_mask"], z["street"],
                             z["street_mask"], key)
    ids = ds.region_ids
    pos = {rid: i for i, rid in enumerate(ids)}
    n = len(ids)
    sat = np.zeros((n, 3, tile_px, tile_px), np.uint8)
    sat_mask = np.zeros(n, bool)
    street = np.zeros((n, max_views, 3, street_px, street_px), np.uint8)
    street_mask = np.zeros((n, max_views), bool)
    sat_paths, st_paths = ds.satellite_paths(), ds.street_paths()
    todo = [(pos[r], None, p) for r, p in sat_paths.items() if r in pos]
    todo += [(pos[r], j, p) for r, ps in st_paths.items() if r in pos for j, p in enumerate(ps[:max_views])]
    for i, j, p in tqdm(todo, desc="decode images", disable=not progress, leave=False):
        try:
            if j is None:
                sat[i], sat_mask[i] = _read(p, tile_px), True
            else:
                street[i, j], street_mask[i, j] = _read(p, street_px), True
        except DataError as e:
            raise DataError(f"region {ids[i]}: {e}") from None
    out = RegionTensors(np.asarray(ids, dtype=object), sat, sat_mask, street, street_mask, key)
    if path is not None:
        with atomic_write(path) as tmp:
            np.savez(tmp, region_ids=np.asarray(ids, dtype=str), satellite=sat, satellite_mask=sat_mask,
                     street=street, street_mask=street_mask)
    return out
