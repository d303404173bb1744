"""Offline WordNet for CAPTURE's synonym matching: an install step, not a manual one.

``nltk.download("wordnet")`` needs the internet. Debian's ``wordnet-base`` and ``wordnet-sense-index``
packages put WordNet 3.0 in ``/usr/share/wordnet/``, but nltk (3.10) only reads its own data folders,
refuses symlinks and needs a ``lexnames`` file Debian does not ship. This step therefore

1. installs the two Debian packages with ``apt-get`` when they are missing and we may (root or
   password-less sudo),
2. copies the files into ``$NLTK_DATA/corpora/wordnet/`` (real copies, no links),
3. writes ``lexnames`` (45 lines: number, name, syntactic category) from the WordNet man page
   ``/usr/share/man/man5/lexnames.5WN.gz``.

It is idempotent. Where apt is unavailable it says so and exits 0 (``--strict`` makes that an error);
CAPTURE then falls back to exact + soft matching and labels its scores accordingly.

Run it as ``python -m urbanlib.captions.wordnet_setup``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from urbanlib.apt import apt_install, apt_prefix
from urbanlib.cache import REPO_ROOT, atomic_write

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
# what nltk's WordNetCorpusReader opens (lexnames is generated, the rest is copied)
REQUIRED = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")] + [
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]
OPTIONAL = ["index.sense", "cntlist.rev"]
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # lexnames' third field


def default_nltk_data() -> Path:
    """``<repo>/.cache/nltk_data``: where the project keeps its nltk data unless ``$NLTK_DATA`` says otherwise."""
    return REPO_ROOT / ".cache" / "nltk_data"


def ensure_nltk_data_env() -> Path:
    """Point nltk at the project's data folder; call before importing ``nltk.corpus.wordnet``.

    Sets ``os.environ["NLTK_DATA"]`` to :func:`default_nltk_data` when unset (child processes inherit
    it) and, when nltk is already imported (it reads the variable only at import), adds the folder
    to ``nltk.data.path`` too.

    Returns:
        The first folder of ``$NLTK_DATA``.
    """
    if not os.environ.get("NLTK_DATA"):
        os.environ["NLTK_DATA"] = str(default_nltk_data())
    first = Path(os.environ["NLTK_DATA"].split(os.pathsep)[0])
    if "nltk.data" in sys.modules:
        import nltk.data

        if str(first) not in nltk.data.path:
            nltk.data.path.insert(0, str(first))
    return first


def wordnet_dir(nltk_data: str | Path | None = None) -> Path:
    """``<nltk_data>/corpora/wordnet``."""
    return Path(nltk_data or ensure_nltk_data_env()) / "corpora" / "wordnet"


def is_installed(nltk_data: str | Path | None = None) -> bool:
    """Cheap check (no nltk import): are all files nltk needs present in ``$NLTK_DATA``?"""
    d = wordnet_dir(nltk_data)
    return all((d / name).is_file() and (d / name).stat().st_size > 0 for name in REQUIRED + ["lexnames"])


def load_wordnet():
    """Nltk's WordNet reader, or ``None`` (with no exception) when WordNet is not installed offline.

    Never downloads. Use :func:`is_installed` first where a cheap check suffices.
    """
    ensure_nltk_data_env()
    if not is_installed():
        return None
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except (LookupError, OSError, AssertionError):  # pragma: no cover - files present but unreadable
        return None


def lexnames_lines(man_page: str | Path = LEXNAMES_MAN) -> list[str]:
    """The ``lexnames`` file of WordNet 3.0, parsed from its man page table.

    Returns:
        45 lines ``"NN<TAB>name<TAB>category"`` (``00 adj.all 3`` ... ``44 adj.ppl 3``), without newlines.

    Raises:
        ValueError: the man page does not hold a consecutive 00..N table.
    """
    text = gzip.decompress(Path(man_page).read_bytes()).decode("utf-8", errors="replace")
    lines = []
    for raw in text.splitlines():
        m = re.match(r"^(\d\d)\t\s*([a-z]+\.[A-Za-z]+)\s*\t", raw)
        if m:
            name = m.group(2)
            lines.append(f"{m.group(1)}\t{name}\t{CATEGORY[name.split('.')[0]]}")
    numbers = [int(line.split("\t")[0]) for line in lines]
    if not lines or numbers != list(range(len(lines))):
        raise ValueError(f"{man_page}: no consecutive lexicographer-file table found (got numbers {numbers[:5]}...)")
    return lines


@dataclass
class SetupResult:
    """What :func:`install` did: ``status`` is ``"installed"``, ``"already"`` or ``"unavailable"``."""

    status: str
    target: Path
    message: str


def install(nltk_data: str | Path | None = None, source: str | Path = DEBIAN_WORDNET,
            man_page: str | Path = LEXNAMES_MAN, use_apt: bool = True, verbose: bool = True) -> SetupResult:
    """Make ``from nltk.corpus import wordnet`` work offline (see the module docstring).

    Args:
        nltk_data: target data folder (default ``$NLTK_DATA`` or ``<repo>/.cache/nltk_data``).
        source: where the Debian packages put WordNet.
        man_page: the gzipped ``lexnames(5WN)`` man page.
        use_apt: install the Debian packages when ``source`` is missing and apt may be used.
        verbose: print what happens.

    Returns:
        A :class:`SetupResult`; ``"unavailable"`` carries the reason (no apt, no permission, ...).
    """
    def log(msg: str) -> None:
        if verbose:
            print(f"[wordnet_setup] {msg}")

    target = wordnet_dir(nltk_data)
    source, man_page = Path(source), Path(man_page)
    missing = [n for n in REQUIRED if not (source / n).is_file()]
    if (missing or not man_page.is_file()) and use_apt:
        prefix = apt_prefix()
        if prefix is None:
            why = ("apt-get not found" if shutil.which("apt-get") is None
                   else "not root and no password-less sudo")
            msg = (f"WordNet is not in {source} and cannot be installed here ({why}). Install the Debian packages "
                   f"{' and '.join(DEBIAN_PACKAGES)} (or copy WordNet 3.0 dict files into {target} with a lexnames "
                   "file). Until then CAPTURE uses exact + soft matching only (labelled 'no-wordnet').")
            if is_installed(nltk_data):
                return SetupResult("already", target, f"WordNet already in {target}")
            log(msg)
            return SetupResult("unavailable", target, msg)
        apt_install(prefix, DEBIAN_PACKAGES, log)
        missing = [n for n in REQUIRED if not (source / n).is_file()]
    if missing or not man_page.is_file():
        if is_installed(nltk_data):
            return SetupResult("already", target, f"WordNet already in {target}")
        what = f"files {missing}" if missing else f"man page {man_page}"
        msg = (f"WordNet {what} not found (Debian packages {', '.join(DEBIAN_PACKAGES)}). CAPTURE uses exact + "
               "soft matching only (labelled 'no-wordnet').")
        log(msg)
        return SetupResult("unavailable", target, msg)

    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for name in REQUIRED + [n for n in OPTIONAL if (source / n).is_file()]:
        src, dst = source / name, target / name
        if dst.is_file() and not dst.is_symlink() and dst.stat().st_size == src.stat().st_size:
            continue
        if dst.is_symlink():
            dst.unlink()
        with atomic_write(dst) as tmp:
            shutil.copyfile(src, tmp)  # copy, never link: nltk refuses symlinks
        copied += 1
    lex = "\n".join(lexnames_lines(man_page)) + "\n"
    lex_path = target / "lexnames"
    if not lex_path.is_file() or lex_path.read_text() != lex:
        lex_path.write_text(lex)
        copied += 1
    status = "installed" if copied else "already"
    msg = f"WordNet 3.0 in {target} ({copied} file(s) written)"
    log(msg)
    return SetupResult(status, target, msg)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m urbanlib.captions.wordnet_setup [--nltk-data DIR] [--no-apt] [--strict]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nltk-data", default=None, help="target nltk data folder (default $NLTK_DATA or .cache/nltk_data)")
    ap.add_argument("--no-apt", action="store_true", help="never call apt-get; only copy from /usr/share/wordnet")
    ap.add_argument("--strict", action="store_true", help="exit 1 when WordNet cannot be installed")
    args = ap.parse_args(argv)
    res = install(args.nltk_data, use_apt=not args.no_apt)
    if res.status != "unavailable":
        reader = load_wordnet() if args.nltk_data is None else None
        if args.nltk_data is None and reader is None:
            print(f"[wordnet_setup] files copied to {res.target} but nltk cannot read them", file=sys.stderr)
            return 1
        if reader is not None:
            print(f"[wordnet_setup] check: wordnet.synsets('car') -> {len(reader.synsets('car'))} synsets")
    return 1 if (args.strict and res.status == "unavailable") else 0


if __name__ == "__main__":
    sys.exit(main())
