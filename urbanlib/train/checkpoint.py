"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint is a directory ``step-<N>/`` holding ``model.safetensors``, ``optimizer.safetensors``
(per-parameter optimizer tensors plus the torch RNG state) and ``state.json`` (config, step,
optimizer hyper-parameters, Python/NumPy RNG state, anything else JSON-able). It is assembled in a
temporary directory and moved into place with ``os.replace``; ``latest.json`` (the pointer) is
likewise replaced atomically, so a kill mid-write never leaves a broken latest checkpoint.

Every checkpoint records the sha256 of its three files, in ``sha256.json`` inside it and in
``latest.json``; loading checks them and refuses a file whose bytes changed (:class:`CheckpointError`
naming the file). Rewriting an existing ``step-<N>/`` first moves the old one aside to
``.old-step-<N>/``, which :func:`latest_checkpoint` falls back on, so at no instant of a kill does
``latest.json`` point at a missing folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from urbanlib.cache import atomic_write

LATEST = "latest.json"
CHECKSUMS = "sha256.json"
FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is: damaged bytes, or a resume that would change the run."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-able remainder."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch (tensor) and Python/NumPy (JSON) RNG states."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(directory: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> Path:
    """Write ``directory/step-<step>/`` atomically and point ``latest.json`` at it.

    Args:
        directory: run directory.
        step: optimizer steps taken.
        model: the unwrapped model (its ``state_dict`` incl. buffers is saved).
        optimizer: optimizer whose tensors go to ``optimizer.safetensors``.
        state: JSON-able extras (config, epoch, scaler state, ...).

    Returns:
        The checkpoint directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    _recover_aside(directory)
    for stale in directory.glob(".tmp-step-*"):  # left by a run killed mid-write (one writer per run dir)
        shutil.rmtree(stale, ignore_errors=True)
    # not cache.atomic_write: that removes a folder already at ``final`` before the swap, and ``latest.json`` may
    # point at it meanwhile; here the old copy is moved aside, where latest_checkpoint finds it (module docstring)
    tmp = directory / f".tmp-step-{step:08d}-{os.getpid()}"
    tmp.mkdir()
    model_sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(model_sd, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    rng_tensors, rng_meta = rng_state()
    save_file({**opt_tensors, **rng_tensors}, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": opt_meta, "rng": rng_meta}))
    sums = {name: file_sha256(tmp / name) for name in FILES}
    (tmp / CHECKSUMS).write_text(json.dumps(sums))
    aside = directory / f".old-{final.name}"
    if final.exists():  # the same step written again: keep the old copy until the pointer is safe
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(tmp, final)
    with atomic_write(directory / LATEST) as pointer:
        pointer.write_text(json.dumps({"checkpoint": final.name, "step": step, "sha256": sums}))
    shutil.rmtree(aside, ignore_errors=True)
    return final


def _recover_aside(directory: Path) -> None:
    """Undo a rewrite killed between moving the old ``step-N`` aside and putting the new one in place."""
    for aside in directory.glob(".old-step-*"):
        final = directory / aside.name[len(".old-"):]
        if final.is_dir():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, final)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint ``latest.json`` points at, or None if there is none."""
    pointer = Path(directory) / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{pointer}: unreadable checkpoint pointer ({e})") from e
    path = Path(directory) / name
    if not path.is_dir():
        aside = Path(directory) / f".old-{name}"
        if aside.is_dir():  # killed while rewriting that step: the old copy is still whole
            return aside
        raise FileNotFoundError(f"{pointer} points at {path}, which does not exist")
    return path


def verify_checkpoint(path: str | Path) -> None:
    """Check a checkpoint's files against their recorded sha256 (its ``sha256.json``, else ``latest.json``).

    Checkpoints written before checksums existed have neither and pass unchecked.

    Raises:
        FileNotFoundError: a file of the checkpoint is missing.
        CheckpointError: a file's bytes differ from the recorded hash (the message names the file).
    """
    path = Path(path)
    for name in FILES:
        if not (path / name).exists():
            raise FileNotFoundError(f"checkpoint {path} is missing {name}")
    sums = None
    own = path / CHECKSUMS
    if own.exists():
        try:
            sums = json.loads(own.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{own}: unreadable checksums ({e})") from None
    else:
        pointer = path.parent / LATEST
        if pointer.exists():
            try:
                meta = json.loads(pointer.read_text())
            except json.JSONDecodeError:
                meta = {}
            if meta.get("checkpoint") == path.name.removeprefix(".old-"):
                sums = meta.get("sha256")
    if not isinstance(sums, dict):
        return
    for name, want in sums.items():
        if name not in FILES:
            continue
        got = file_sha256(path / name)
        if got != want:
            raise CheckpointError(f"{path / name}: sha256 {got[:16]}... does not match the recorded {str(want)[:16]}...; "
                                  "the file changed after it was written (a disk error or an edit); delete the run "
                                  "folder to train it again")


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Restore model (and optimizer, RNG) from a checkpoint directory; never unpickles.

    The files are checked against their recorded sha256 first (:func:`verify_checkpoint`).

    Returns:
        The JSON state (``step``, config, extras).
    """
    path = Path(path)
    verify_checkpoint(path)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state_dict(tensors, state["optimizer"]))
    if restore_rng:
        set_rng_state(tensors, state["rng"])
    return state
