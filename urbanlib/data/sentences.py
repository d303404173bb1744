r"""Caption text into sentences: one splitter, each caller stating its rule where it calls it.

Every rule splits after ``. ! ?`` followed by whitespace and drops empty pieces; the callers differ,
on purpose, in two choices:

- the scene-graph parsers (:mod:`urbanlib.captions.parser`) split after every ``. ! ?`` and at every
  line break: one boundary too many only hands the parser a shorter sentence;
- rule-based refinement (:mod:`urbanlib.captions.refine_rules`) splits after ``. ! ?`` only before
  what can begin a statement (:data:`STATEMENT_START`: a capital, digit, quote, bracket or dash), so
  "approx. three cars" stays whole and a SynthCity caption splits back into exactly its statements,
  and at line breaks;
- sentence-unit text features (:mod:`urbanlib.eval.text_features`) split only after ``. ! ?``, not at
  a bare line break, and embed a text without any split whole (``or [text.strip()]`` at the call):
  the cached embeddings are keyed by these exact sentences.
"""

from __future__ import annotations

import functools
import re

STATEMENT_START = r"[\"'(\-\u2013A-Z0-9]"  # what may begin a sentence in refinement's rule (regex class)


@functools.cache
def _splitter(next_starts: str | None, line_breaks: bool) -> re.Pattern:
    after_end = r"(?<=[.!?])\s+" + (f"(?={next_starts})" if next_starts is not None else "")
    return re.compile(after_end + (r"|\n+" if line_breaks else ""))


def split_sentences(text: str, *, next_starts: str | None = None, line_breaks: bool = True) -> list[str]:
    """The sentences of ``text``, stripped and non-empty (no tokenizer data needed).

    Args:
        text: a caption.
        next_starts: a regex character class; when given, a ``. ! ?`` ends a sentence only if what follows
            its whitespace matches it (e.g. :data:`STATEMENT_START`); None: always.
        line_breaks: also split at line breaks that follow no ``. ! ?``.

    Returns:
        The sentences in order; ``[]`` for a blank text.
    """
    return [s.strip() for s in _splitter(next_starts, line_breaks).split(text.strip()) if s and s.strip()]
