"""Baidu BD09 coordinates offline: Mercator metres <-> BD09 lon/lat <-> GCJ-02 <-> WGS84, and tile polygons.

Baidu Maps works in three systems, one after the other:

* **BD09MC**, "Baidu Mercator" metres: what Baidu's tiles are numbered in. A tile at zoom ``z`` is
  ``256 * 2**(18 - z)`` metres on a side (1024 m at zoom 16); tile ``(x, y)`` spans
  ``[x * s, (x + 1) * s] x [y * s, (y + 1) * s]``, so ``(x * s, y * s)`` is its south-west corner
  (y grows northwards, unlike XYZ tiles).
* **BD09** lon/lat: Baidu's degrees. Baidu's Mercator is not a formula but a piecewise fit: six
  latitude bands, each with a degree-6 polynomial in ``|y| / c9`` (or ``|lat| / c9``) for one axis
  and a linear term for the other. ``MC_BAND``/``LL_BAND``/``MC2LL``/``LL2MC`` below are those
  tables, as in ``BMap.MercatorProjection`` of the Baidu Maps JavaScript API v2 (and reproduced in
  open libraries, e.g. transbigdata's ``bd09mctobd09``, BSD-3). The two directions are two separate
  fits; they agree to a few centimetres (``tests/test_geo_bd09.py`` checks it).
* **GCJ-02** ("Mars coordinates"), China's obfuscated datum: WGS84 plus a smooth offset of a few
  hundred metres computed on the Krasovsky 1940 ellipsoid (``GCJ_A``, ``GCJ_EE``). The offset
  polynomial is the widely published reverse-engineered one (eviltransform, prcoords, coordtransform);
  it applies only inside China's bounding box (``CHINA_BBOX``), elsewhere GCJ-02 equals WGS84.
  BD09 is GCJ-02 with a further rotation-and-shift (``X_PI``, 0.0065, 0.006, 2e-5, 3e-6: Baidu's
  ``bd_encrypt`` as published by the same libraries).

The forward maps (WGS84 -> GCJ-02 -> BD09) are the defining formulas; the inverses here are exact
to well under a millimetre, by fixed-point iteration on the forward map (the one-step inverses
most libraries use are off by up to a few metres). All functions take scalars or arrays of any
shape (lon first, as GeoJSON does) and return numpy arrays of the same shape.

Provenance of the UrbanCLIP release's "WGS84 coordinate" column: the toolkit asked Baidu's
``geoconv/v1`` service to convert the tile's corner ``(x * 1024, y * 1024)`` "from 6 to 5", which is
BD09MC -> **BD09** lon/lat, not WGS84; :func:`mc_to_bd09` reproduces the column to the last digit,
and the true WGS84 corner lies about 1.3 km away (:mod:`urbanlib.data.urbanclip_layout`).
"""

from __future__ import annotations

import math

import numpy as np

# --- Baidu Mercator (BMap.MercatorProjection, Baidu Maps JavaScript API v2) ---------------------------
MC_BAND = np.array([12890594.86, 8362377.87, 5591021.0, 3481989.83, 1678043.12, 0.0])  # |y| band edges, metres
LL_BAND = np.array([75.0, 60.0, 45.0, 30.0, 15.0, 0.0])  # |lat| band edges, degrees
# per band: lon = c0 + c1*|x|; lat = c2 + c3*t + ... + c8*t^6 with t = |y| / c9  (signs restored after)
MC2LL = np.array([
    [1.410526172116255e-8, 8.98305509648872e-6, -1.9939833816331, 200.9824383106796, -187.2403703815547,
     91.6087516669843, -23.38765649603339, 2.57121317296198, -0.03801003308653, 17337981.2],
    [-7.435856389565537e-9, 8.983055097726239e-6, -0.78625201886289, 96.32687599759846, -1.85204757529826,
     -59.36935905485877, 47.40033549296737, -16.50741931063887, 2.28786674699375, 10260144.86],
    [-3.030883460898826e-8, 8.98305509983578e-6, 0.30071316287616, 59.74293618442277, 7.357984074871,
     -25.38371002664745, 13.45380521110908, -3.29883767235584, 0.32710905363475, 6856817.37],
    [-1.981981304930552e-8, 8.983055099779535e-6, 0.03278182852591, 40.31678527705744, 0.65659298677277,
     -4.44255534477492, 0.85341911805263, 0.12923347998204, -0.04625736007561, 4482777.06],
    [3.09191371068437e-9, 8.983055096812155e-6, 6.995724062e-5, 23.10934304144901, -2.3663490511e-4,
     -0.6321817810242, -0.00663494467273, 0.03430082397953, -0.00466043876332, 2555164.4],
    [2.890871144776878e-9, 8.983055095805407e-6, -3.068298e-8, 7.47137025468032, -3.53937994e-6,
     -0.02145144861037, -1.234426596e-5, 1.0322952773e-4, -3.23890364e-6, 826088.5],
])
# per band: x = c0 + c1*|lon|; y = c2 + c3*t + ... + c8*t^6 with t = |lat| / c9
LL2MC = np.array([
    [-0.0015702102444, 111320.7020616939, 1704480524535203.0, -10338987376042340.0, 26112667856603880.0,
     -35149669176653700.0, 26595700718403920.0, -10725012454188240.0, 1800819912950474.0, 82.5],
    [0.0008277824516172526, 111320.7020463578, 647795574.6671607, -4082003173.641316, 10774905663.51142,
     -15171875531.51559, 12053065338.62167, -5124939663.577472, 913311935.9512032, 67.5],
    [0.00337398766765, 111320.7020202162, 4481351.045890365, -23393751.19931662, 79682215.47186455,
     -115964993.2797253, 97236711.15602145, -43661946.33752821, 8477230.501135234, 52.5],
    [0.00220636496208, 111320.7020209128, 51751.86112841131, 3796837.749470245, 992013.7397791013,
     -1221952.21711287, 1340652.697009075, -620943.6990984312, 144416.9293806241, 37.5],
    [-0.0003441963504368392, 111320.7020576856, 278.2353980772752, 2485758.690035394, 6070.750963243378,
     54821.18345352118, 9540.606633304236, -2710.55326746645, 1405.483844121726, 22.5],
    [-0.0003218135878613132, 111320.7020701615, 0.00369383431289, 823725.6402795718, 0.46104986909093,
     2351.343141331292, 1.58060784298199, 8.77738589078284, 0.37238884252424, 7.45],
])
MAX_LAT = 74.0  # Baidu's projection is defined for |lat| <= 74 degrees (BMap clamps there)

# --- GCJ-02 and BD09 offsets ------------------------------------------------------------------------------
GCJ_A = 6378245.0  # Krasovsky 1940 semi-major axis, metres
GCJ_EE = 0.00669342162296594323  # Krasovsky 1940 first eccentricity squared
X_PI = math.pi * 3000.0 / 180.0  # BD09's rotation frequency
CHINA_BBOX = (72.004, 0.8293, 137.8347, 55.8271)  # lon_min, lat_min, lon_max, lat_max where GCJ-02 is offset
EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG), for distances
_ITERATIONS = 8  # fixed-point steps of the inverses; each gains ~3 digits (the offsets' slopes are ~1e-3)


def tile_size_m(zoom: int) -> float:
    """Side of a Baidu tile at ``zoom`` in BD09 Mercator metres (256 px at 2**(18 - zoom) m/px)."""
    return 256.0 * 2.0 ** (18 - zoom)


def mc_to_bd09(x, y):
    """BD09 Mercator metres -> BD09 (lon, lat) degrees, with Baidu's six-band polynomial (``MC2LL``)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    band = np.argmax(np.abs(y)[..., None] >= MC_BAND, axis=-1)  # first band edge below |y| (the last is 0)
    return _polynomial(x, y, MC2LL[band])


def bd09_to_mc(lon, lat):
    """BD09 (lon, lat) degrees -> BD09 Mercator metres (``LL2MC``); |lat| must be at most 74 degrees.

    Bands are chosen by ``|lat|``, mirroring :func:`mc_to_bd09` (Baidu's own script falls back to the
    equatorial band for every southern latitude; Baidu maps only cover the north).
    """
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    if np.any(np.abs(lat) > MAX_LAT):
        raise ValueError(f"BD09 latitude outside Baidu's projection (|lat| <= {MAX_LAT}): "
                         f"{lat[np.abs(lat) > MAX_LAT].ravel()[:3]}")
    lon = (lon + 180.0) % 360.0 - 180.0  # Baidu wraps longitudes into [-180, 180)
    band = np.argmax(np.abs(lat)[..., None] >= LL_BAND, axis=-1)
    return _polynomial(lon, lat, LL2MC[band])


def _polynomial(a, b, c):
    """Baidu's ``convertor``: linear in ``|a|``, degree-6 in ``|b| / c9``; signs of the inputs restored."""
    t = np.abs(b) / c[..., 9]
    out_a = c[..., 0] + c[..., 1] * np.abs(a)
    out_b = c[..., 2] + t * (c[..., 3] + t * (c[..., 4] + t * (c[..., 5] + t * (c[..., 6] + t * (
        c[..., 7] + t * c[..., 8])))))  # Horner form of c2 + c3*t + ... + c8*t^6
    return out_a * np.where(a < 0, -1.0, 1.0), out_b * np.where(b < 0, -1.0, 1.0)  # Baidu: T *= sign(x)


def out_of_china(lon, lat) -> np.ndarray:
    """True where (lon, lat) lies outside ``CHINA_BBOX``, where GCJ-02 equals WGS84."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    w, s, e, n = CHINA_BBOX
    return (lon < w) | (lon > e) | (lat < s) | (lat > n)


def wgs84_to_gcj02(lon, lat):
    """WGS84 -> GCJ-02 degrees (the published offset on the Krasovsky ellipsoid; identity outside China)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    x, y = lon - 105.0, lat - 35.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * math.pi) + 20.0 * np.sin(2.0 * x * math.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(y * math.pi) + 40.0 * np.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * math.pi) + 320.0 * np.sin(y * math.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * math.pi) + 20.0 * np.sin(2.0 * x * math.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(x * math.pi) + 40.0 * np.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * math.pi) + 300.0 * np.sin(x / 30.0 * math.pi)) * 2.0 / 3.0)
    rad = np.radians(lat)
    magic = 1.0 - GCJ_EE * np.sin(rad) ** 2
    dlat = dlat * 180.0 / (GCJ_A * (1.0 - GCJ_EE) / (magic * np.sqrt(magic)) * math.pi)  # metres -> degrees
    dlon = dlon * 180.0 / (GCJ_A / np.sqrt(magic) * np.cos(rad) * math.pi)
    outside = out_of_china(lon, lat)
    return np.where(outside, lon, lon + dlon), np.where(outside, lat, lat + dlat)


def gcj02_to_wgs84(lon, lat):
    """GCJ-02 -> WGS84 degrees: the exact inverse of :func:`wgs84_to_gcj02` (fixed-point iteration)."""
    return _invert(wgs84_to_gcj02, lon, lat)


def gcj02_to_bd09(lon, lat):
    """GCJ-02 -> BD09 degrees (Baidu's ``bd_encrypt``)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    z = np.hypot(lon, lat) + 2e-5 * np.sin(lat * X_PI)
    theta = np.arctan2(lat, lon) + 3e-6 * np.cos(lon * X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon, lat):
    """BD09 -> GCJ-02 degrees: the exact inverse of :func:`gcj02_to_bd09` (fixed-point iteration)."""
    return _invert(gcj02_to_bd09, lon, lat)


def _invert(forward, lon, lat):
    """Solve ``forward(p) = (lon, lat)`` for ``p``: ``p <- p - (forward(p) - target)``, from ``p = target``.

    Converges because each forward map is the identity plus an offset whose slope is about 1e-3.
    """
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    plon, plat = lon.copy(), lat.copy()
    for _ in range(_ITERATIONS):
        flon, flat = forward(plon, plat)
        plon, plat = plon - (flon - lon), plat - (flat - lat)
    return plon, plat


def bd09_to_wgs84(lon, lat):
    """BD09 -> GCJ-02 -> WGS84 degrees."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def wgs84_to_bd09(lon, lat):
    """WGS84 -> GCJ-02 -> BD09 degrees."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def mc_to_wgs84(x, y):
    """BD09 Mercator metres -> WGS84 (lon, lat): Baidu's MC -> LL, then BD09 -> GCJ-02 -> WGS84."""
    return bd09_to_wgs84(*mc_to_bd09(x, y))


def wgs84_to_mc(lon, lat):
    """WGS84 (lon, lat) -> BD09 Mercator metres (the inverse chain of :func:`mc_to_wgs84`)."""
    return bd09_to_mc(*wgs84_to_bd09(lon, lat))


def tile_rings(tile_x, tile_y, zoom: int = 16, points_per_edge: int = 1) -> np.ndarray:
    """WGS84 outlines of Baidu tiles: closed rings, counter-clockwise from the south-west corner.

    Each vertex is converted on its own, so the ring follows the BD09 -> WGS84 warp (a tile's edges
    are not exactly parallels and meridians in WGS84).

    Args:
        tile_x: Baidu tile column numbers (e.g. the first number of the release's ``BD09 coordinate``).
        tile_y: Baidu tile row numbers, counted northwards (same size as ``tile_x``).
        zoom: Baidu zoom level (the UrbanCLIP release uses 16: 1024 m tiles).
        points_per_edge: vertices per edge before the next corner (1: the four corners).

    Returns:
        Array of shape ``(n, 4 * points_per_edge + 1, 2)``: (lon, lat) degrees, first vertex repeated last.
    """
    if points_per_edge < 1:
        raise ValueError(f"points_per_edge must be at least 1, got {points_per_edge}")
    tx = np.asarray(tile_x, dtype=float).ravel()
    ty = np.asarray(tile_y, dtype=float).ravel()
    if tx.shape != ty.shape:
        raise ValueError(f"tile_x and tile_y differ in size: {tx.size} vs {ty.size}")
    f = np.arange(points_per_edge) / points_per_edge  # fractions along one edge
    one, zero = np.ones_like(f), np.zeros_like(f)
    # unit square, counter-clockwise from (0, 0): south edge, east, north, west, then back to the start
    ux = np.concatenate([f, one, 1 - f, zero, [0.0]])
    uy = np.concatenate([zero, f, one, 1 - f, [0.0]])
    s = tile_size_m(zoom)
    lon, lat = mc_to_wgs84((tx[:, None] + ux) * s, (ty[:, None] + uy) * s)
    return np.stack([lon, lat], axis=-1)  # (n, vertices, 2)


def tile_centres(tile_x, tile_y, zoom: int = 16):
    """WGS84 (lon, lat) of the centres of Baidu tiles (the centre's BD09 Mercator point, converted)."""
    s = tile_size_m(zoom)
    return mc_to_wgs84((np.asarray(tile_x, dtype=float) + 0.5) * s, (np.asarray(tile_y, dtype=float) + 0.5) * s)


def distance_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in metres between (lon1, lat1) and (lon2, lat2), degrees (haversine)."""
    p1, p2 = np.radians(np.asarray(lat1, dtype=float)), np.radians(np.asarray(lat2, dtype=float))
    dlat = p2 - p1
    dlon = np.radians(np.asarray(lon2, dtype=float) - np.asarray(lon1, dtype=float))
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
