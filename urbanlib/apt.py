"""Debian packages the project installs for itself (WordNet data, headless Chromium), through apt-get.

Used by ``make install``: as root, or with password-less sudo; elsewhere the callers say what is
missing and their tests skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence


def apt_prefix() -> list[str] | None:
    """The command prefix that may run apt-get here (``[]`` as root, ``["sudo", "-n"]``), else ``None``."""
    if shutil.which("apt-get") is None:
        return None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def why_no_apt() -> str:
    """Why :func:`apt_prefix` is None, in a few words."""
    return "apt-get not found" if shutil.which("apt-get") is None else "not root and no password-less sudo"


def apt_install(prefix: list[str], packages: Sequence[str], log: Callable[[str], None] = print) -> bool:
    """``apt-get install -y --no-install-recommends packages``; on failure update the lists once and retry.

    Returns:
        True if apt-get succeeded (its last error is logged otherwise).
    """
    cmd = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", *packages]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(2):
        log(f"running: {' '.join(cmd)}")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode == 0:
            return True
        if attempt == 0:  # stale or empty package lists are the usual cause
            subprocess.run([*prefix, "apt-get", "update"], capture_output=True, text=True, env=env)
    log(f"apt-get failed: {r.stderr.strip()[-400:]}")
    return False
