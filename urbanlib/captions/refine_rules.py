"""UrbanCLIP's rule-based text refinement (§3.1): drop or rewrite vague and unfactual sentences.

The paper says only that generated descriptions contain "unfactual or vague information" and that
"rule-based removal or rewriting" keeps "the essential details about the satellite image, including
its infrastructure, greenery, activity". It does not list its rules. urbanlib's rules are data
(``rules/urbanclip.json``, one named rule each, applied in order) written from that description and
from the captions the papers print; they were not tuned on SynthCity's truth labels.
:func:`evaluate_refinement` then measures, on SynthCity, what they remove.

A rule matches a sentence by regular expressions (``patterns``) and/or whole-word phrases
(``keywords``, plural ``s``/``es`` allowed), case-insensitive. ``action="remove"`` drops the
sentence; ``action="rewrite"`` substitutes ``replacement`` for every pattern match and keeps the
rest. ``when="no_match"`` inverts a removal rule (drop sentences that match none of its terms: the
topic filter).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from urbanlib import style as house

from ..data.report import DataError
from ..data.sentences import STATEMENT_START, split_sentences


@dataclass
class Rule:
    """One named refinement rule (see the module docstring for how it matches)."""

    name: str
    action: str  # "remove" | "rewrite"
    patterns: list[str] = field(default_factory=list)  # regular expressions, searched case-insensitively
    keywords: list[str] = field(default_factory=list)  # whole words/phrases; a plural s/es also matches
    replacement: str = ""  # rewrite: text that replaces each pattern match
    when: str = "match"  # "match": act when the rule matches; "no_match": remove when nothing matches
    why: str = ""  # the reason shown in reports

    def __post_init__(self):
        if self.action not in ("remove", "rewrite"):
            raise ValueError(f"rule {self.name!r}: action must be 'remove' or 'rewrite', got {self.action!r}")
        if self.when not in ("match", "no_match"):
            raise ValueError(f"rule {self.name!r}: when must be 'match' or 'no_match', got {self.when!r}")
        if self.action == "rewrite" and (self.keywords or self.when != "match" or not self.patterns):
            raise ValueError(f"rule {self.name!r}: a rewrite rule needs patterns (and no keywords / no_match)")
        if not self.patterns and not self.keywords:
            raise ValueError(f"rule {self.name!r}: give patterns or keywords")
        try:
            self._regexes = [re.compile(p, re.IGNORECASE) for p in self.patterns]
        except re.error as e:
            raise ValueError(f"rule {self.name!r}: bad regular expression ({e})") from None
        words = sorted((re.escape(k.strip()) for k in self.keywords if k.strip()), key=len, reverse=True)
        self._keyword_re = (re.compile(r"\b(?:" + "|".join(words) + r")(?:s|es)?\b", re.IGNORECASE)
                            if words else None)

    def matches(self, sentence: str) -> bool:
        """Whether any pattern or keyword occurs in the sentence."""
        if self._keyword_re is not None and self._keyword_re.search(sentence):
            return True
        return any(r.search(sentence) for r in self._regexes)

    def rewrite(self, sentence: str) -> str:
        """The sentence with every pattern match replaced (rewrite rules)."""
        for r in self._regexes:
            sentence = r.sub(self.replacement, sentence)
        return sentence

    def to_dict(self) -> dict:
        """Plain JSON form."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


@dataclass
class RefineRules:
    """An ordered rule set. ``min_words``: a rewritten sentence shorter than this is dropped."""

    rules: list[Rule]
    min_words: int = 2
    name: str = "custom"

    @classmethod
    def from_dict(cls, d: dict, source: str = "rules") -> RefineRules:
        """Rules from their JSON form; errors name the source and the rule."""
        if not isinstance(d.get("rules"), list):
            raise DataError(f"{source}: needs a list under 'rules'")
        rules = []
        for i, r in enumerate(d["rules"]):
            try:
                rules.append(Rule(**r))
            except (TypeError, ValueError) as e:
                raise DataError(f"{source}: rule #{i} ({r.get('name', '?')}): {e}") from None
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise DataError(f"{source}: duplicate rule names {sorted(n for n, c in Counter(names).items() if c > 1)}")
        return cls(rules=rules, min_words=int(d.get("min_words", 2)), name=str(d.get("name", "custom")))

    @classmethod
    def from_json(cls, path: str | Path) -> RefineRules:
        """Rules from a JSON file (same layout as ``urbanlib/captions/rules/urbanclip.json``)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e})") from None
        return cls.from_dict(d, source=str(path))

    @classmethod
    def default(cls) -> RefineRules:
        """The default UrbanCLIP rule set, urbanlib's wording (``rules/urbanclip.json``)."""
        text = (resources.files(__package__) / "rules" / "urbanclip.json").read_text()
        return cls.from_dict(json.loads(text), source="urbanlib/captions/rules/urbanclip.json")

    def to_dict(self) -> dict:
        """Plain JSON form (round-trips through :meth:`from_dict`)."""
        return {"name": self.name, "min_words": self.min_words, "rules": [r.to_dict() for r in self.rules]}

    def without(self, *names: str) -> RefineRules:
        """The same rules minus some (for per-rule ablations)."""
        unknown = set(names) - {r.name for r in self.rules}
        if unknown:
            raise KeyError(f"unknown rule(s) {sorted(unknown)}; have {[r.name for r in self.rules]}")
        return RefineRules([r for r in self.rules if r.name not in names], self.min_words, self.name)


@dataclass
class RefineResult:
    """A refined caption and what happened to it.

    Attributes:
        text: the refined caption (kept sentences joined by spaces).
        kept: the kept sentences, after rewriting.
        removed: ``(sentence, rule name)`` for each dropped sentence (as written in the input).
        rewritten: ``(before, after, rule name)`` for each rewrite.
    """

    text: str
    kept: list[str]
    removed: list[tuple[str, str]]
    rewritten: list[tuple[str, str, str]]


def _tidy(sentence: str) -> str:
    s = re.sub(r"\s+", " ", sentence).strip(" ,;:")
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)
    if s and s[-1] not in ".!?":
        s += "."
    return s[:1].upper() + s[1:]


def refine_sentence(sentence: str, rules: RefineRules) -> tuple[str | None, str | None, list[tuple[str, str, str]]]:
    """Apply the rules in order to one sentence.

    Returns:
        ``(kept sentence or None, name of the rule that removed it or None, rewrites)``.
    """
    rewrites = []
    for rule in rules.rules:
        if rule.action == "rewrite":
            if rule.matches(sentence):
                new = _tidy(rule.rewrite(sentence))
                if new != sentence:
                    rewrites.append((sentence, new, rule.name))
                    sentence = new
                    if len(re.findall(r"[A-Za-z]+", sentence)) < rules.min_words:
                        return None, f"{rule.name}:too_short", rewrites
        elif rule.matches(sentence) == (rule.when == "match"):
            return None, rule.name, rewrites
    return sentence, None, rewrites


def refine(text: str, rules: RefineRules | None = None) -> RefineResult:
    """Refine one caption sentence by sentence (UrbanCLIP §3.1).

    Args:
        text: the generated caption.
        rules: the rule set (default :meth:`RefineRules.default`).

    Returns:
        The refined caption with what was removed, rewritten and why.
    """
    rules = rules or RefineRules.default()
    kept, removed, rewritten = [], [], []
    for s in split_sentences(text, next_starts=STATEMENT_START):
        out, why, rw = refine_sentence(s, rules)
        rewritten += rw
        if out is None:
            removed.append((s, why))
        else:
            kept.append(out)
    return RefineResult(" ".join(kept), kept, removed, rewritten)


def refine_captions(captions: pd.DataFrame, rules: RefineRules | None = None,
                    on_empty: str = "keep_raw") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Refine every caption of a table and count what each rule did.

    Args:
        captions: a captions table (``text`` column; other columns are carried over).
        rules: the rule set (default :meth:`RefineRules.default`).
        on_empty: when every sentence of a caption is removed: ``"keep_raw"`` keeps the raw caption
            (counted as ``emptied_kept_raw`` in the report), ``"empty"`` leaves an empty string.

    Returns:
        ``(refined, report)``: ``refined`` is a copy with ``text`` refined, ``raw_text``, ``n_removed`` and
        ``n_rewritten`` added; ``report`` has one row per rule: ``rule``, ``action``, ``sentences``
        (how many it removed or rewrote), ``captions`` (how many captions it touched), ``why`` and an
        ``example`` sentence.
    """
    if on_empty not in ("keep_raw", "empty"):
        raise ValueError(f"on_empty must be 'keep_raw' or 'empty', got {on_empty!r}")
    if "text" not in captions.columns:
        raise DataError(f"captions table has no 'text' column; columns: {list(captions.columns)}")
    rules = rules or RefineRules.default()
    n_sent, n_capt, example = Counter(), Counter(), {}
    texts, n_rm, n_rw, emptied = [], [], [], 0
    for raw in captions["text"].astype(str):
        res = refine(raw, rules)
        touched = {name for _, name in res.removed} | {name for *_, name in res.rewritten}
        for s, name in res.removed:
            n_sent[name] += 1
            example.setdefault(name, s)
        for before, _, name in res.rewritten:
            n_sent[name] += 1
            example.setdefault(name, before)
        n_capt.update(touched)
        if not res.kept and on_empty == "keep_raw":
            emptied += 1
            texts.append(raw)
        else:
            texts.append(res.text)
        n_rm.append(len(res.removed))
        n_rw.append(len(res.rewritten))
    refined = captions.copy()
    refined["raw_text"] = captions["text"].to_numpy()
    refined["text"] = texts
    refined["n_removed"] = n_rm
    refined["n_rewritten"] = n_rw
    rows = []
    for r in rules.rules:
        for name in (r.name, f"{r.name}:too_short") if r.action == "rewrite" else (r.name,):
            if name != r.name and not n_sent[name]:
                continue
            rows.append({"rule": name, "action": "remove" if name != r.name else r.action, "sentences": n_sent[name],
                         "captions": n_capt[name], "why": r.why, "example": example.get(name, "")})
    if emptied:
        rows.append({"rule": "emptied_kept_raw", "action": "kept", "sentences": 0, "captions": emptied,
                     "why": "every sentence was removed; the raw caption is kept", "example": ""})
    return refined, pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Measuring refinement on SynthCity (statements carry truth labels)
# ---------------------------------------------------------------------------------------------------


def label_statements(captions: pd.DataFrame, rules: RefineRules | None = None) -> pd.DataFrame:
    """One row per SynthCity statement with its truth label and the rule that removed it.

    Refinement runs per statement: each statement of the simulated captioners is one sentence, and
    :func:`refine` splits their captions into exactly these sentences.

    Args:
        captions: a SynthCity captions table with ``statements`` (``text``, ``true``, ``kind``) and
            ``omissions`` columns.
        rules: the rule set (default :meth:`RefineRules.default`).

    Returns:
        Columns: ``caption`` (row position), ``source``, ``style``, ``kind`` (``fact`` | ``filler`` |
        ``hallucination`` | ``wrong_quantity``), ``true``, ``kept`` (bool), ``rule`` (remover or None),
        ``rewritten`` (bool).
    """
    for col in ("statements", "omissions"):
        if col not in captions.columns:
            raise DataError(f"captions table has no {col!r} column: refinement can only be measured on "
                            "captions with truth labels (SynthCity)")
    rules = rules or RefineRules.default()
    memo: dict[str, tuple[bool, str | None, bool]] = {}  # template captions repeat sentences a lot

    def judge(text: str) -> tuple[bool, str | None, bool]:
        if text not in memo:
            pieces = [refine_sentence(s, rules) for s in split_sentences(text, next_starts=STATEMENT_START)]
            kept = any(out is not None for out, _, _ in pieces)
            rule = None if kept else next((why for _, why, _ in pieces if why), None)
            memo[text] = (kept, rule, any(rw for _, _, rw in pieces))
        return memo[text]

    rows = []
    for i, (src, sty, stmts) in enumerate(zip(captions["source"], captions["style"], captions["statements"],
                                              strict=True)):
        for st in stmts:
            kept, rule, rewritten = judge(st["text"])
            rows.append({"caption": i, "source": src, "style": sty, "kind": st["kind"], "true": bool(st["true"]),
                         "kept": kept, "rule": rule, "rewritten": rewritten})
    return pd.DataFrame(rows, columns=["caption", "source", "style", "kind", "true", "kept", "rule", "rewritten"])


def evaluate_refinement(captions: pd.DataFrame, rules: RefineRules | None = None,
                        by: tuple[str, ...] = ("source", "style")) -> pd.DataFrame:
    """Hallucination and omission rates before and after refinement, per group.

    Definitions (statement counts; ``fact`` statements are true, ``filler`` are true but generic,
    ``hallucination`` and ``wrong_quantity`` are false; ``omissions`` are true facts the captioner
    left out):

    - ``hallucination_before`` = false statements / statements; ``hallucination_after`` = false
      statements kept / statements kept.
    - ``false_removed`` = share of the false statements that refinement removed.
    - ``omission_before`` = omissions / (omissions + facts); ``omission_after`` = (omissions + facts
      removed) / (omissions + facts): refinement can only add omissions.
    - ``filler_before`` / ``filler_after`` = filler statements / statements (kept).
    - ``fact_removed`` = share of the fact statements removed (collateral damage).

    Args:
        captions: a SynthCity captions table (``statements``, ``omissions``).
        rules: the rule set (default :meth:`RefineRules.default`).
        by: grouping columns (``()`` for one overall row).

    Returns:
        One row per group with the columns above and the counts behind them.
    """
    lab = label_statements(captions, rules)
    omis = captions["omissions"].to_numpy()
    keys = list(by)

    def summarise(g: pd.DataFrame, omissions: int) -> dict:
        false, kept = ~g["true"], g["kept"]
        fact = g["kind"] == "fact"
        filler = g["kind"] == "filler"
        n, nk = len(g), int(kept.sum())
        nf = int(fact.sum())
        return {
            "captions": g["caption"].nunique(), "statements": n, "statements_kept": nk,
            "false": int(false.sum()), "false_kept": int((false & kept).sum()),
            "hallucination_before": false.sum() / n if n else np.nan,
            "hallucination_after": (false & kept).sum() / nk if nk else np.nan,
            "false_removed": (false & ~kept).sum() / false.sum() if false.sum() else np.nan,
            "omissions": int(omissions), "facts": nf, "facts_removed": int((fact & ~kept).sum()),
            "omission_before": omissions / (omissions + nf) if omissions + nf else np.nan,
            "omission_after": (omissions + (fact & ~kept).sum()) / (omissions + nf) if omissions + nf else np.nan,
            "filler_before": filler.sum() / n if n else np.nan,
            "filler_after": (filler & kept).sum() / nk if nk else np.nan,
            "fact_removed": (fact & ~kept).sum() / nf if nf else np.nan,
        }

    if not keys:
        return pd.DataFrame([summarise(lab, int(omis.sum()))])
    rows = []
    for key, g in lab.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        mask = np.ones(len(captions), dtype=bool)
        for k, v in zip(keys, key, strict=True):
            mask &= (captions[k] == v).to_numpy()
        rows.append({**dict(zip(keys, key, strict=True)), **summarise(g, int(omis[mask].sum()))})
    return pd.DataFrame(rows)


def removals_by_kind(captions: pd.DataFrame, rules: RefineRules | None = None) -> pd.DataFrame:
    """Statements each rule removed, by truth kind (rows: rules; columns: fact, filler, hallucination, ...).

    Shows each rule's precision: removing filler and false statements is the intent, removing facts
    is collateral damage.
    """
    lab = label_statements(captions, rules)
    lab = lab[~lab["kept"]]
    return pd.crosstab(lab["rule"], lab["kind"]).rename_axis(index="rule", columns="kind")


def plot_refinement(ev: pd.DataFrame, group: str = "source"):
    """Hallucination and omission rates before/after refinement, one bar pair per group.

    Args:
        ev: the output of :func:`evaluate_refinement` (one row per ``group`` value; other grouping
            columns should be filtered out first).
        group: the column naming the bars.

    Returns:
        A matplotlib Figure with two panels.
    """
    import matplotlib.pyplot as plt

    if ev[group].duplicated().any():
        raise ValueError(f"evaluate_refinement output has repeated {group!r} values; filter it to one row per {group}")
    fig, axes = plt.subplots(1, 2, figsize=house.figsize(2, 1, panel_height=3.2), sharey=False)
    x = np.arange(len(ev))
    for ax, metric, title in zip(axes, ("hallucination", "omission"),
                                 ("false statements / statements", "true facts missing / true facts"), strict=True):
        ax.bar(x - 0.2, ev[f"{metric}_before"], 0.4, label="raw")
        ax.bar(x + 0.2, ev[f"{metric}_after"], 0.4, label="refined (rules)")
        ax.set_xticks(x, ev[group], rotation=20, ha="right")
        ax.set_title(f"{metric}: {title}", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
