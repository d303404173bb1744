"""Tests for urbanlib.paper: the transcribed tables and the claims register.

Structural tests always run. Cell checks read the seed paper texts in
../shared/papers and skip cleanly when that folder is absent.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

import urbanlib.paper as paper
from urbanlib.data.report import DataError

PAPERS_DIR = Path(__file__).resolve().parents[2] / "shared" / "papers"
TEXT_FILES = {"urbanclip": "urbanclip-www2024.txt", "urbanln": "urbanln-aaai2026.txt"}


@pytest.fixture(scope="module")
def tables() -> pd.DataFrame:
    return paper.load_tables()


@pytest.fixture(scope="module")
def claims() -> pd.DataFrame:
    return paper.load_claims()


def _text(name: str) -> list[str]:
    path = PAPERS_DIR / TEXT_FILES[name]
    if not path.exists():
        pytest.skip(f"seed paper text not available at {path}")
    return path.read_text(encoding="utf-8").splitlines()


def _cell(df: pd.DataFrame, **keys) -> pd.Series:
    sub = df
    for k, v in keys.items():
        sub = sub[sub[k] == v]
    assert len(sub) == 1, f"expected one cell for {keys}, got {len(sub)}"
    return sub.iloc[0]


# ---------------------------------------------------------------- structure


def test_columns_and_types(tables, claims):
    assert list(tables.columns) == paper.TABLE_COLUMNS
    assert tables["value"].dtype == float
    assert list(claims.columns) == paper.CLAIM_COLUMNS


def test_every_table_present_with_expected_size(tables):
    sizes = tables.groupby(["paper", "table"]).size().to_dict()
    for name, ids in paper.TABLES.items():
        for t in ids:
            assert sizes.get((name, t), 0) > 0, f"{name} table {t} missing"
    # printed grid sizes: rows x cells (UrbanCLIP T2: 8 rows x 18 + 9 prose numbers)
    assert sizes[("urbanclip", "2")] == 8 * 18 + 9
    assert sizes[("urbanln", "1")] == 10 * 15
    assert sizes[("urbanln", "7")] == 10 * 15
    assert sizes[("urbanln", "8")] == 11 * 9
    assert sizes[("urbanln", "4")] == 8 * 4


def test_flags_vocabulary_and_nan_policy(tables):
    assert set(tables.flag) <= set(paper.FLAGS)
    nan = tables[tables.value.isna()]
    assert set(nan.flag) <= {"missing", "ocr_damaged"}
    assert (tables[tables.flag == ""].value.notna()).all()


def test_values_match_raw_where_clean(tables):
    clean = tables[(tables.flag == "") & ~tables.raw.str.contains(",")]
    parsed = clean.raw.str.replace(r"</?u>", "", regex=True).str.rstrip("%").astype(float)
    assert (parsed.to_numpy() == clean.value.to_numpy()).all()


def test_expected_flags_present(tables):
    flagged = tables[tables.flag != ""]
    damaged = set(flagged[flagged.flag == "ocr_damaged"].raw)
    assert {".603", ".696", "0.21"} <= damaged
    prose = flagged[flagged.flag == "prose_only"]
    assert {"Guangzhou", "Shenzhen"} <= set(prose.city)
    conflict = flagged[flagged.flag == "conflict"]
    assert sorted(conflict.raw) == ["0.035", "0.135"]
    assert set(conflict.table) == {"3", "8"}


def test_r2_cells_are_plausible(tables):
    r2 = tables[(tables.metric == "R2") & ~tables.model.str.contains("improvement", case=False)]
    assert r2.value.dropna().between(-1, 1).all()


def test_wide_table_layout():
    wide = paper.table("urbanclip", 2, show_flags=False)
    assert wide.loc[("Beijing", "UrbanCLIP"), ("carbon", "R2")] == pytest.approx(0.662)
    assert wide.loc[("Shanghai", "PG-SimCLR"), ("gdp", "MAE")] == pytest.approx(0.725)
    flagged = paper.table("urbanln", "3")
    assert flagged.loc[("NY", "Tile2Vec"), ("crime", "R2")] == "0.135 [conflict]"
    mu = paper.table("urbanln", 4, show_flags=False)
    assert mu.loc[("NY", "UrbanLN+SI", "mu=0.5"), ("population", "R2")] == pytest.approx(0.725)
    with pytest.raises(KeyError, match="urbanln"):
        paper.table("urbanln", 9)


def test_plot_returns_figure():
    import matplotlib.figure

    fig = paper.plot_table("urbanln", 1)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes[0].patches) == 8 * 5  # 8 model rows x 5 tasks


def test_malformed_rows_name_file_and_line(tmp_path):
    path = tmp_path / "tables.csv"
    rows = pd.read_csv(paper.TABLES_CSV, dtype=str, keep_default_na=False)
    rows.loc[2, "value"] = "zero"
    rows.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"tables\.csv line 4: value 'zero' is not a number"):
        paper.load_tables(path)
    rows = pd.read_csv(paper.TABLES_CSV, dtype=str, keep_default_na=False)
    rows.loc[5, "flag"] = "fixed"
    rows.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"line 7: unknown flag 'fixed'"):
        paper.load_tables(path)
    path.write_text(
        paper.TABLES_CSV.read_text(encoding="utf-8") + "urbanln,1,BJ,x,,population,R2,1,1,,,extra\n"
    )
    with pytest.raises(DataError, match=r"tables\.csv: malformed CSV"):
        paper.load_tables(path)
    c = pd.read_csv(paper.CLAIMS_CSV, dtype=str, keep_default_na=False)
    c.loc[3, "claim_id"] = c.loc[2, "claim_id"]
    c.to_csv(tmp_path / "claims.csv", index=False)
    with pytest.raises(DataError, match=r"claims\.csv line 5: missing or duplicate"):
        paper.load_claims(tmp_path / "claims.csv")


def test_claims_register(claims):
    assert claims.claim_id.is_unique
    assert set(claims.paper) == set(paper.PAPERS)
    assert len(claims) >= 50
    text = " ".join(claims.paper_value)
    for number in [
        "7.06%",
        "4.75%",
        "7.25%",
        "5.49%",
        "0.411 vs 0.365",
        "18.23%",
        "7.84%",
        "8.32%",
        "-10.45%",
        "-26.45%",
        "30.97%",
    ]:
        assert number in text, number
    blob = " ".join(claims.quantity_a + " " + claims.quantity_b)
    for variant in [
        "UrbanViT",
        "w/o refined text",
        "Text-SimCLR",
        "w/o L_LM",
        "w/o L_Con",
        "w/o Consensus",
        "w/o MSD",
        "mu=0.5",
        "FPS",
        "trainable params",
    ]:
        assert variant in blob, variant


# ------------------------------------------- the papers' own arithmetic, from our cells


def test_urbanclip_city_gain_is_mean_of_indicator_gains(tables):
    """Prose 7.06% / 4.75% = mean of the three R2 improvement cells of Table 2."""
    for city, prose in (("Beijing", 7.06), ("Shanghai", 4.75)):
        row = tables[
            (tables.paper == "urbanclip")
            & (tables.table == "2")
            & (tables.city == city)
            & (tables.model == "Improvement (%)")
            & (tables.metric == "R2")
            & (tables.flag == "")
        ]
        assert len(row) == 3
        assert row.value.mean() == pytest.approx(prose, abs=0.01)


def test_urbanln_bj_average_gains_average_sv_and_si_rows(tables):
    """18.23 / 7.84 / 8.32 = mean over the +SV and +SI improvement rows of UrbanLN Table 1."""
    t1 = tables[
        (tables.paper == "urbanln") & (tables.table == "1") & tables.model.str.contains("improvement")
    ]
    means = t1.groupby("metric").value.mean()
    assert means["R2"] == pytest.approx(18.23, abs=0.05)
    assert means["RMSE"] == pytest.approx(7.84, abs=0.01)
    assert means["MAE"] == pytest.approx(8.32, abs=0.01)


def test_urbanln_ny_average_and_sz_count(tables):
    ny = tables[
        (tables.paper == "urbanln") & (tables.table == "3") & (tables.model == "UrbanLN+SV improvement (%)")
    ]
    assert ny.value.mean() == pytest.approx(30.97, abs=0.01)
    sz = tables[(tables.paper == "urbanln") & (tables.table == "7")]
    wins = 0
    baselines = sz[~sz.model.str.startswith("UrbanLN")]
    ours = sz[sz.model.isin(["UrbanLN+SV", "UrbanLN+SI"])]
    for (task, metric), grp in ours.groupby(["task", "metric"]):
        base = baselines[(baselines.task == task) & (baselines.metric == metric)].value
        best = grp.value.max() if metric == "R2" else grp.value.min()
        wins += best > base.max() if metric == "R2" else best <= base.min()
    assert wins == 14  # "state-of-the-art results in 14 out of 15 entries"


# ---------------------------------------------------- cells against the paper text


def _row_line(lines: list[str], model: str, raws: list[str]) -> int | None:
    """Index of a text line whose first cell is ``model`` and whose cells are ``raws`` in order."""
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.split("\t")]
        while cells and cells[-1] == "":
            cells.pop()
        if cells[:1] == [model] and cells[1:] == raws:
            return i
    return None


CELLS = [  # (paper, table, city, model, task, metric, raw) picked across tables and flags
    ("urbanclip", "2", "Beijing", "UrbanCLIP", "carbon", "R2", "0.662"),
    ("urbanclip", "2", "Beijing", "Autoencoder", "gdp", "RMSE", ".603"),
    ("urbanclip", "2", "Shanghai", "ResNet-18", "gdp", "R2", "0.21"),
    ("urbanclip", "2", "Shanghai", "PG-SimCLR", "population", "R2", "0.410"),
    ("urbanln", "1", "BJ", "UrbanLN+SV", "carbon", "R2", "0.677"),
    ("urbanln", "2", "SH", "UrbanVLP", "night_light", "R2", "0.506"),
    ("urbanln", "3", "NY", "Tile2Vec", "crime", "R2", "0.135"),
    ("urbanln", "8", "NY", "Tile2Vec", "crime", "R2", "0.035"),
    ("urbanln", "6", "SH", "UrbanCLIP", "gdp", "RMSE", "1.213"),
    ("urbanln", "7", "SZ", "UrbanCLIP", "carbon", "MAE", "0.392"),
    ("urbanln", "8", "NY", "UrbanVLP", "crime", "RMSE", "<u>1.147</u>"),
]


@pytest.mark.parametrize("key", CELLS, ids=lambda k: "-".join(k[:6]))
def test_cell_is_in_its_model_row_of_the_paper(tables, key):
    """The cell's printed text sits in the paper line of that model, at the cell's position."""
    name, table_id, city, model, task, metric, raw = key
    lines = _text(name)
    cell = _cell(tables, paper=name, table=table_id, city=city, model=model, task=task, metric=metric)
    assert cell.raw == raw
    row = tables[
        (tables.paper == name)
        & (tables.table == table_id)
        & (tables.model == model)
        & (tables.flag != "prose_only")
    ]
    raws = list(row.raw)  # in printed order
    at = _row_line(lines, model, raws)
    assert at is not None, f"no line of {TEXT_FILES[name]} prints {model} with {raws}"
    position = list(row.index).index(cell.name)
    assert re.split(r"\s*\t\s*", lines[at].strip())[1 + position] == raw


@pytest.mark.parametrize("name", ["urbanclip", "urbanln"])
def test_every_model_row_round_trips_to_the_text(tables, name):
    lines = _text(name)
    sub = tables[
        (tables.paper == name) & (tables.model != "") & (tables.flag != "prose_only") & (tables.table != "4")
    ]
    for (table_id, model), row in sub.groupby(["table", "model"], sort=False):
        if model.endswith("improvement (%)"):
            model = "Improvement"
        if model == "Improvement (%)":
            model = "Improvement"
        hits = [i for i, line in enumerate(lines) if line.split("\t")[0].strip() == model]
        assert hits, f"{name} table {table_id}: {model} not in text"
        found = any(all(r in [c.strip() for c in lines[i].split("\t")] for r in row.raw) for i in hits)
        assert found, f"{name} table {table_id} row {model}: {list(row.raw)} not found on one line"


def test_prose_only_numbers_are_in_the_prose(tables):
    text = "\n".join(_text("urbanclip"))
    para = next(p for p in text.split("\n") if "outperforms the best baseline, PG-SimCLR" in p)
    prose = tables[tables.flag == "prose_only"]
    for city in ("Guangzhou", "Shenzhen", "Beijing", "Shanghai"):
        raw = _cell(prose, city=city).raw
        assert raw in para and city in para
    order = re.findall(r"(\d+\.\d+)%", para.split("in terms of R^2")[0])
    assert order == ["7.06", "4.75", "7.25", "5.49"]  # city order Beijing, Shanghai, Guangzhou, Shenzhen
    assert list(_cell(prose, city=c).value for c in ("Beijing", "Shanghai", "Guangzhou", "Shenzhen")) == [
        float(x) for x in order
    ]


def test_mu_table_and_dataset_counts_against_text(tables):
    lines = _text("urbanln")
    mu = tables[(tables.paper == "urbanln") & (tables.table == "4") & (tables.setting == "mu=0.5")]
    for model, raws in mu.groupby("model", sort=False).raw:
        hit = [
            ln
            for ln in lines
            if re.split(r"\s*\t\s*", ln.strip())[1:2] == ["0.5"]
            and re.split(r"\s*\t\s*", ln.strip())[2:6] == list(raws)
        ]
        assert hit, f"mu=0.5 row of {model} not in the text"
    t5 = tables[(tables.paper == "urbanln") & (tables.table == "5") & (tables.city == "NY")]
    ny_line = next(ln for ln in lines if ln.startswith("NY\t517"))
    assert [c.strip() for c in ny_line.split("\t") if c.strip()][1:] == list(t5.raw)
    assert _cell(t5, metric="n_street_view").value == 44617
    assert math.isnan(_cell(t5, task="gdp").value)


def test_mu_best_at_half_holds_in_six_of_eight_columns(tables, claims):
    """LN20 says mu=0.5 is best; Table 4 agrees in 6 of 8 columns, as the register records."""
    t4 = tables[(tables.paper == "urbanln") & (tables.table == "4")]
    best = t4.loc[t4.groupby(["model", "city"]).value.idxmax()]
    assert (best.setting == "mu=0.5").sum() == 6
    exceptions = set(
        zip(best[best.setting != "mu=0.5"].model, best[best.setting != "mu=0.5"].city, strict=True)
    )
    assert exceptions == {("UrbanLN+SI", "SH"), ("UrbanLN+SI", "SZ")}
    assert "6 of 8" in claims.set_index("claim_id").loc["LN20", "claim"]
