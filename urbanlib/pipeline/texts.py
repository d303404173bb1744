"""Which caption texts train which images: region-level (satellite) and image-level (street view) pairs.

Every list here follows the order of :class:`~urbanlib.pipeline.tensors.RegionTensors`, so pairs can
be built by position. A region's satellite captions may come from several captioners (sources); a
street view's captions are the ones written for that very image.
"""

from __future__ import annotations

from urbanlib.data.dataset import UrbanDataset


def region_texts(ds: UrbanDataset, style: str = "short", sources: list[str] | None = None) -> list[list[str]]:
    """Satellite captions of each region (in ``ds.regions`` order); empty lists where there are none.

    Args:
        ds: the dataset.
        style: ``"short"`` (UrbanCLIP) or ``"long"`` (UrbanLN).
        sources: keep only these captioners (default: all).
    """
    cap = _captions(ds, style, sources)
    sat = set(ds.images.loc[ds.images["kind"] == "satellite", "path"])
    street = set(ds.images.loc[ds.images["kind"] == "street", "path"])
    # captions of satellite tiles, plus captions not tied to any known image (real layouts)
    cap = cap[cap["image"].isin(sat) | ~cap["image"].isin(street)]
    by_region = cap.groupby("region_id", sort=False)["text"].apply(list).to_dict()
    return [list(by_region.get(r, [])) for r in ds.region_ids]


def street_texts(ds: UrbanDataset, max_views: int, style: str = "long",
                 sources: list[str] | None = None) -> list[list[list[str]]]:
    """Captions of each street-view slot: ``out[region][slot]`` is a list of texts.

    Slots follow :func:`~urbanlib.pipeline.tensors.load_tensors`: a region's street views in table
    order, the first ``max_views`` of them.
    """
    cap = _captions(ds, style, sources)
    by_image = cap.groupby("image", sort=False)["text"].apply(list).to_dict()
    st = ds.images[ds.images["kind"] == "street"]
    paths = st.groupby("region_id", sort=False)["path"].apply(list).to_dict()
    return [[list(by_image.get(p, [])) for p in paths.get(r, [])[:max_views]] for r in ds.region_ids]


def _captions(ds: UrbanDataset, style: str, sources: list[str] | None):
    cap = ds.captions
    if "style" in cap and style:
        cap = cap[cap["style"] == style]
    if sources is not None:
        unknown = set(sources) - set(cap["source"])
        if unknown:
            raise ValueError(f"caption sources {sorted(unknown)} not in dataset; available: "
                             f"{sorted(cap['source'].unique())}")
        cap = cap[cap["source"].isin(sources)]
    return cap

