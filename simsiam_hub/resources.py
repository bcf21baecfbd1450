"""Files simsiam-hub ships beside its code: the YAML configs, the transfer scripts, hubconf.py.

In a checkout they are the repository's top-level ``configs/``, ``transfer/`` and
``hubconf.py``; an installed wheel maps ``configs/`` and ``transfer/`` into the package
(``simsiam_hub/configs``, ``simsiam_hub.transfer``) and carries the torch.hub entry points
as ``simsiam_hub/hubconf.py``. These functions find them either way.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_KINDS = ("pretrain", "lincls", "detection")


def configs_dir() -> Path:
    """The folder of shipped configs (``pretrain/``, ``lincls/``, ``detection/``)."""
    for candidate in (PACKAGE_DIR / "configs", PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"simsiam-hub's configs are missing: expected {PACKAGE_DIR / 'configs'} (a broken install?)"
    )


def shipped_configs(kind: str) -> dict[str, Path]:
    """``{name: path}`` of the shipped configs of one kind (``pretrain``, ``lincls``, ``detection``)."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind {kind!r}: expected one of {', '.join(CONFIG_KINDS)}")
    return {p.stem: p for p in sorted((configs_dir() / kind).glob("*.yaml"))}


def hubconf_dir() -> Path:
    """A folder holding a ``hubconf.py`` for ``torch.hub.load(folder, ..., source="local")``."""
    checkout = PACKAGE_DIR.parent
    return checkout if (checkout / "hubconf.py").is_file() and (checkout / "configs").is_dir() else PACKAGE_DIR
