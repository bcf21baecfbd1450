"""Checkpoint files: the safe reader every ``.pt``/``.pth`` goes through, the training-checkpoint
format (one writer, one reader), and which checkpoints of a run may be pruned.

Nothing is unpickled beyond tensors and plain containers: ``torch.load(weights_only=True)``.
A file that holds other objects is refused, naming the object it holds.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch

from .errors import SimsiamHubError
from .fileio import atomic_torch_save

__all__ = [
    "PRETRAIN_FORMAT",
    "CheckpointError",
    "safe_torch_load",
    "load_tagged",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "find_resume_checkpoint",
    "prune_checkpoints",
]

log = logging.getLogger(__name__)

PRETRAIN_FORMAT = "simsiam-hub/pretrain-checkpoint"
PRETRAIN_VERSION = 1
CHECKPOINT_RE = re.compile(r"^checkpoint_step(\d{8})\.pt$")


class CheckpointError(SimsiamHubError, ValueError):
    """A file that is not a checkpoint of the kind expected, or of another model or run."""


TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a pre-zip torch.save file
DETECTRON2_PREFIXES = ("stem.", "res2.", "res3.", "res4.", "res5.", "backbone.", "roi_heads.")


def pickle_kind(path: Path) -> str | None:
    """What a file that is a plain Python pickle holds, read opcode by opcode and never unpickled:
    ``"detectron2"`` (a Detectron2 weights file: a ``model`` dict of ``stem.``/``res2.``/... names),
    ``"pickle"`` (any other pickle), or None (not a pickle: a torch zip checkpoint, a pre-zip torch
    file, or something else, for torch.load to judge)."""
    import pickletools

    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            return None  # torch's zip format
        f.seek(0)
        strings, longs, ops = set(), [], 0
        try:
            for op, arg, _ in pickletools.genops(f):
                ops += 1
                if isinstance(arg, str):
                    strings.add(arg)
                elif op.name in ("LONG1", "LONG4") and isinstance(arg, int):
                    longs.append(arg)
                if op.name == "STOP" or len(strings) > 200:
                    break
        except Exception:  # not a pickle at all (pickletools raises ValueError and others)
            return None
    if longs == [TORCH_LEGACY_MAGIC] and ops <= 4:
        return None  # torch.save's pre-zip format: torch.load reads it safely
    if "model" in strings and any(s.startswith(DETECTRON2_PREFIXES) for s in strings):
        return "detectron2"
    return "pickle"


def safe_torch_load(path: str | Path, *, error=CheckpointError, mmap: bool = False):
    """``torch.load(path, weights_only=True)``; a file that does not load is refused with
    ``error``, saying what was found (a Detectron2 or other plain pickle, a pickled object's
    global, a truncated file, ...)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} not found" if not path.exists() else f"{path} is not a file")
    kind = pickle_kind(path)
    if kind == "detectron2":
        raise error(
            f"{path} is a Detectron2 pickle: it needs no conversion (give it to transfer/train_net.py as "
            "MODEL.WEIGHTS); simsiam-hub reads backbones from checkpoints of tensors, .safetensors files or model "
            "folders, and never unpickles files"
        )
    if kind == "pickle":
        raise error(
            f"{path} is a Python pickle, refused for safety: loading a pickle can run any code, and simsiam-hub never "
            "unpickles files; expected a torch checkpoint of tensors, a .safetensors file or a model folder"
        )
    try:
        try:
            with warnings.catch_warnings():  # torch asks to "file an issue" for any pickle protocol above 2
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not mmap or "mmap" not in str(err):  # legacy (pre-zip) files cannot be mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of arbitrary objects, a truncated file, not a checkpoint at all
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise error(
                f"{path} was refused and not loaded: it holds a pickled Python object ({found.group(1)}), "
                "not just tensors, and simsiam-hub never unpickles objects; expected a checkpoint of tensors"
            ) from None
        reason = text.strip().splitlines()[0].split(". ")[0][:200] if text.strip() else ""
        raise error(
            f"{path} is not a readable checkpoint (truncated or not a torch file?): {type(err).__name__}: {reason}"
        ) from None


def load_tagged(
    path: str | Path, fmt: str, max_version: int, *, error=CheckpointError, what: str = "checkpoint"
) -> dict:
    """A checkpoint dict that says ``format == fmt`` in a version this code reads."""
    ckpt = safe_torch_load(path, error=error)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = (
            f"format {ckpt['format']!r}"
            if isinstance(ckpt, dict) and "format" in ckpt
            else (f"keys {sorted(ckpt)[:8]}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}")
        )
        raise error(f"{path} is not a simsiam-hub {what}: expected format={fmt!r}, found {found}")
    if ckpt.get("version", 0) > max_version:
        raise error(
            f"{path} has {what} version {ckpt['version']}; this simsiam-hub reads up to {max_version}: upgrade it"
        )
    return ckpt


# --- training checkpoints -----------------------------------------------------------------------


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint_step{step:08d}.pt"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Files named like training checkpoints in ``output_dir``, newest (highest step) first;
    their content is not checked."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)), reverse=True)


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint safely and check that it is one."""
    return load_tagged(path, PRETRAIN_FORMAT, PRETRAIN_VERSION, what="training checkpoint")


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write a training checkpoint atomically: ``state`` (model, optimizer, step, config,
    run_id, ...) under the format tag and version."""
    return atomic_torch_save({"format": PRETRAIN_FORMAT, "version": PRETRAIN_VERSION, **state}, path)


def find_resume_checkpoint(output_dir: str | Path) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``output_dir`` that loads; unreadable ones are skipped (and said)."""
    for path in list_checkpoints(output_dir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping %s", err)
    return None


def run_id_of(path: Path) -> str | None:
    """The ``run_id`` a training checkpoint records, or None for a file that is not one.
    Memory-mapped: the tensors are not read."""
    try:
        ckpt = safe_torch_load(path, mmap=True)
    except CheckpointError:
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != PRETRAIN_FORMAT:
        return None
    return ckpt.get("run_id")


def prune_checkpoints(output_dir: str | Path, run_id: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints that are this run's own (valid files
    recording ``run_id``); files of other runs, unreadable ones and the newest of ours are
    never touched. Returns what was deleted."""
    ours = [p for p in list_checkpoints(output_dir) if run_id_of(p) == run_id]
    deleted = ours[max(keep, 1) :]
    for path in deleted:
        path.unlink(missing_ok=True)
    return deleted
