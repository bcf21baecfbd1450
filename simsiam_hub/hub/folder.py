"""The model folder: what a model repo (a Hub repo, or a local folder) holds, its ``config.json``
with the typed ``simsiam`` section, and the checks a folder must pass before it is published.

``model.safetensors``    the backbone alone, torchvision/timm names, no ``fc``, string metadata
``config.json``          timm's format (``architecture``, ``num_classes: 0``, ``num_features``,
                         ``pretrained_cfg``) plus a ``simsiam`` section (:class:`SimsiamSection`)
``README.md``            the model card (:mod:`.card`), evaluation results as model-index
``results.json``         evaluation results (:mod:`.results` format), when there are any
``simsiam.safetensors``  optional: the whole SimSiam model, to continue pretraining
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .. import __version__
from ..data import DEFAULT_IMAGE_SIZE
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, eval_crop_pct
from ..errors import SimsiamHubError
from ..fileio import check_path_writable
from ..models import ARCHS, feature_dim
from .results import ResultsError, read_results
from .weights import SIMSIAM_FILE, WeightsError, check_backbone, infer_arch, read_safetensors, split_state_dict

__all__ = [
    "BACKBONE_FILE",
    "CONFIG_FILE",
    "CARD_FILE",
    "RESULTS_FILE",
    "MODEL_FILES",
    "SIMSIAM_FILE",
    "FolderError",
    "fingerprint",
    "public_source",
    "public_recipe",
    "SimsiamSection",
    "timm_config",
    "read_config",
    "write_config",
    "read_backbone",
    "check_destination",
    "validate_folder",
]

log = logging.getLogger(__name__)

BACKBONE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
RESULTS_FILE = "results.json"
MODEL_FILES = (BACKBONE_FILE, CONFIG_FILE, CARD_FILE, RESULTS_FILE, SIMSIAM_FILE)
PAPER_ID = "arXiv:2011.10566"
PAPER_NAME = "Exploring Simple Siamese Representation Learning"


class FolderError(SimsiamHubError, ValueError):
    """A model folder that is incomplete, inconsistent or not a model folder at all."""


# Config keys that describe the exporting machine's run, not the recipe: never published.
RUN_LOCAL_KEYS = ("run.output_dir", "run.init_from", "run.resume", "data.root")
FINGERPRINT_CHARS = 12  # of a SHA-256: enough to tell files apart in a card


def _looks_local(text: str) -> bool:
    """A local path rather than a name, a repo id or a URL: absolute, or under ~ or ./."""
    return not text.startswith(("http://", "https://")) and (
        text.startswith(("/", "~", "./", "../")) or (len(text) > 2 and text[1] == ":" and text[2] in "\\/")
    )


def fingerprint(path: Path) -> str | None:
    """The first hex digits of a file's SHA-256 (a model folder: of its model.safetensors), or None."""
    path = path / BACKBONE_FILE if path.is_dir() else path
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def public_source(text: str) -> str:
    """``text`` as a published card may show it: a local path becomes its file name and a short
    SHA-256 fingerprint (user names and mount points stay on the machine); URLs, repo ids and
    names are kept."""
    if not isinstance(text, str) or not _looks_local(text.strip()):
        return text
    path = Path(text.strip()).expanduser()
    digest = fingerprint(path)
    return f"{path.name} (sha256 {digest})" if digest else path.name


def public_recipe(recipe, prefix: str = ""):
    """A recipe (a training config as nested dicts, or a sentence) without the run-local keys
    (:data:`RUN_LOCAL_KEYS`), local paths anywhere in it shown by :func:`public_source`."""
    if isinstance(recipe, dict):
        return {
            key: public_recipe(value, f"{prefix}{key}.")
            for key, value in recipe.items()
            if f"{prefix}{key}" not in RUN_LOCAL_KEYS
        }
    if isinstance(recipe, list):
        return [public_recipe(value, prefix) for value in recipe]
    return public_source(recipe) if isinstance(recipe, str) else recipe


# Types and bounds of the simsiam section's fields, checked whenever it is read: a config.json
# with image_size 100000 or "big" is refused in one line, not in a MemoryError or a TypeError later.
# name: (accepted types, lowest, highest, may be null)
MAX_IMAGE_SIZE = 4096
FIELD_RULES = {
    "small_stem": ((bool,), None, None, False),
    "image_size": ((int,), 8, MAX_IMAGE_SIZE, False),
    "method": ((str,), None, None, False),
    "epochs": ((int, float), 0, 1e6, True),
    "batch_size": ((int,), 1, 1e9, True),
    "dataset": ((str,), None, None, False),
    "source": ((str,), None, None, False),
    "license": ((str,), None, None, False),
    "dim": ((int,), 1, 1e6, True),
    "pred_dim": ((int,), 1, 1e6, True),
    "has_simsiam": ((bool,), None, None, False),
    "variant": ((str,), None, None, True),
    "recipe": ((dict, str), None, None, True),
    "library_version": ((str,), None, None, False),
}
KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object"}


@dataclass
class SimsiamSection:
    """The ``simsiam`` section of ``config.json``: what the card, the loaders and the evaluation
    commands need to know of the weights (as timm's ``PretrainedCfg`` is for timm)."""

    arch: str
    small_stem: bool = False
    # The training crop size, the eval transform's. Stored once, as timm's pretrained_cfg.input_size
    # (see read_config), never in the section itself.
    image_size: int = DEFAULT_IMAGE_SIZE
    method: str = "simsiam"  # simsiam | moco | supervised
    epochs: Optional[float] = None
    batch_size: Optional[int] = None
    dataset: str = "unknown"  # the pretraining data (our dataset names, or e.g. imagenet-1k)
    source: str = ""  # where the weights came from
    license: str = "other"
    dim: Optional[int] = None  # projector width, when the whole model is included
    pred_dim: Optional[int] = None
    has_simsiam: bool = False  # simsiam.safetensors is in the folder
    variant: Optional[str] = None  # registry name, for the official releases
    recipe: Union[dict, str, None] = None  # the training config (our runs) or a sentence
    code_url: Optional[str] = None  # where the simsiam-hub code lives, for the card's install line
    library_version: str = f"simsiam-hub {__version__}"

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise FolderError(f"simsiam.arch: expected one of {', '.join(ARCHS)}, found {self.arch!r}")
        for name, (kinds, low, high, optional) in FIELD_RULES.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
            if ok and low is not None:
                ok = math.isfinite(value) and low <= value <= high
            if not ok:
                expected = " or ".join(KIND_NAMES[k] for k in kinds)
                bounds = f" from {low:g} to {high:g}" if low is not None else ""
                raise FolderError(
                    f"simsiam.{name}: expected {expected}{bounds}{' or null' if optional else ''}, found {value!r}"
                )

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        del values["image_size"]
        return values

    @classmethod
    def from_json(cls, values: dict, image_size: int, where: str = "config.json") -> SimsiamSection:
        """From a ``simsiam`` section and the image size of ``pretrained_cfg.input_size``; keys a
        newer simsiam-hub added are ignored (logged), and so is the section's own image_size,
        which earlier folders also carry (always equal to input_size's)."""
        if not isinstance(values, dict):
            raise FolderError(f"{where}: the simsiam section should be a JSON object, found {type(values).__name__}")
        values = dict(values, image_size=image_size)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            log.debug("%s: ignoring unknown simsiam keys %s", where, unknown)
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as err:
            raise FolderError(f"{where}: the simsiam section is incomplete: {err}") from None
        except FolderError as err:
            raise FolderError(f"{where}: {err}") from None

    @classmethod
    def from_timm_config(cls, config: dict, image_size: int, where: str = "config.json") -> SimsiamSection:
        """A folder made by timm (no ``simsiam`` section): what its timm fields say."""
        arch = config.get("architecture")
        if arch not in ARCHS:
            raise FolderError(f"{where}: expected an architecture among {', '.join(ARCHS)}, found {arch!r}")
        return cls(arch=arch, image_size=image_size, method="unknown", source=where)


def timm_config(section: SimsiamSection) -> dict:
    """config.json: timm's format (what ``timm.create_model('hf-hub:...')`` reads), plus ours."""
    size = section.image_size
    return {
        "architecture": section.arch,
        "num_classes": 0,
        "num_features": feature_dim(section.arch),
        "global_pool": "avg",
        "pretrained_cfg": {
            "tag": section.method,
            "custom_load": False,
            "input_size": [3, size, size],
            "fixed_input_size": False,
            "interpolation": "bilinear",
            "crop_pct": eval_crop_pct(section.dataset),
            "crop_mode": "center",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "num_classes": 0,
            "pool_size": [max(1, size // 32)] * 2,
            "first_conv": "conv1",
            "classifier": "fc",
            "license": section.license,
            "paper_ids": PAPER_ID,
            "paper_name": PAPER_NAME,
        },
        "simsiam": section.to_json(),
    }


def _numbers(value, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def check_pretrained_cfg(pretrained_cfg, where: str) -> None:
    """The timm fields the eval transform and the card read (input_size, crop_pct, interpolation,
    mean, std): of the right type and within bounds, or a one-line :class:`FolderError`."""
    if not isinstance(pretrained_cfg, dict):
        raise FolderError(f"{where}: pretrained_cfg: expected an object, found {pretrained_cfg!r}")
    checks = {
        "input_size": lambda v: (
            _numbers(v, 3)
            and all(isinstance(x, int) for x in v)
            and v[0] == 3
            and all(8 <= x <= MAX_IMAGE_SIZE for x in v[1:])
        ),
        "crop_pct": lambda v: _numbers([v], 1) and 0 < v <= 2,
        "interpolation": lambda v: v in INTERPOLATIONS,
        "mean": lambda v: _numbers(v, 3),
        "std": lambda v: _numbers(v, 3) and all(x > 0 for x in v),
    }
    expected = {
        "input_size": f"[3, height, width] with sizes from 8 to {MAX_IMAGE_SIZE}",
        "crop_pct": "a number in (0, 2]",
        "interpolation": f"one of {', '.join(INTERPOLATIONS)}",
        "mean": "3 numbers",
        "std": "3 positive numbers",
    }
    for key, ok in checks.items():
        if key in pretrained_cfg and not ok(pretrained_cfg[key]):
            raise FolderError(f"{where}: pretrained_cfg.{key}: expected {expected[key]}, found {pretrained_cfg[key]!r}")


def read_config(folder: str | Path) -> tuple[SimsiamSection, dict]:
    """``(simsiam section, pretrained_cfg)`` of a model folder's ``config.json``; a folder
    made by timm, without the section, gets one from its timm fields."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FolderError(f"{path} not found: a model folder has {', '.join(MODEL_FILES[:2])}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FolderError(f"{path} is not a readable config.json: {err}") from None
    if not isinstance(config, dict):
        raise FolderError(f"{path}: expected a JSON object, found {type(config).__name__}")
    pretrained_cfg = config.get("pretrained_cfg") or {}
    check_pretrained_cfg(pretrained_cfg, str(path))
    # The one place the image size is read: where timm reads it (checked just above).
    image_size = pretrained_cfg.get("input_size", [3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE])[-1]
    if "simsiam" in config:
        return SimsiamSection.from_json(config["simsiam"], image_size, str(path)), pretrained_cfg
    return SimsiamSection.from_timm_config(config, image_size, str(path)), pretrained_cfg


def write_config(folder: str | Path, section: SimsiamSection) -> Path:
    path = Path(folder) / CONFIG_FILE
    path.write_text(json.dumps(timm_config(section), indent=2) + "\n", encoding="utf-8")
    return path


def read_backbone(folder: str | Path, where: str | None = None):
    """``(backbone tensors, section)`` of a folder's ``model.safetensors``: torchvision names
    without ``fc`` (a timm folder with a classifier still gives its backbone), checked against
    the architecture its ``config.json`` names."""
    folder = Path(folder)
    section, _ = read_config(folder)
    where = where or str(folder / BACKBONE_FILE)
    state, _ = read_safetensors(folder / BACKBONE_FILE)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    arch, small_stem = infer_arch(state, where)
    if (arch, small_stem) != (section.arch, section.small_stem):
        stem = lambda small: " with the small stem" if small else ""  # noqa: E731
        raise FolderError(
            f"{where} holds a {arch}{stem(small_stem)} backbone, but config.json says {section.arch}{stem(section.small_stem)}"
        )
    return check_backbone(state, arch, small_stem, where), section


def is_model_folder(path: Path) -> bool:
    """A folder of this project's files only, whose config.json has a ``simsiam`` section."""
    names = [p.name for p in path.iterdir() if not p.name.startswith(".")]
    if not names or any(name not in MODEL_FILES for name in names) or CONFIG_FILE not in names:
        return False
    try:
        return "simsiam" in json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def check_destination(path: str | Path, *, force: bool = False, what: str = "--out") -> Path:
    """``path`` as a folder that may be (re)written with a model folder: new, empty, or a model
    folder of this project. Anything else is refused unless ``force`` (its files then go)."""
    path = Path(path).expanduser()
    check_path_writable(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"{what} {path} is a file: expected a folder to write the model into")
    if not path.exists() or force or not any(path.iterdir()) or is_model_folder(path):
        return path
    found = sorted(p.name for p in path.iterdir())
    raise FolderError(
        f"{what} {path} is not empty and is not a simsiam-hub model folder (found {', '.join(found[:6])}"
        f"{', ...' if len(found) > 6 else ''}): refusing to replace it; choose a new or empty folder, "
        "or pass --force to replace it and everything in it"
    )


def validate_folder(folder: str | Path, where: str | None = None) -> SimsiamSection:
    """Everything a published model folder promises, checked: config.json, the backbone's
    safetensors (complete, of the architecture config.json names), the whole model's when
    present (its widths), results.json when present. Returns the section."""
    folder = Path(folder)
    where = where or str(folder)
    try:
        backbone, section = read_backbone(folder, f"{where}/{BACKBONE_FILE}")
        whole_path = folder / SIMSIAM_FILE
        if whole_path.is_file():
            state, _ = read_safetensors(whole_path)
            _, whole_backbone, whole = split_state_dict(state, f"{where}/{SIMSIAM_FILE}")
            if whole is None:
                raise FolderError(
                    f"{where}/{SIMSIAM_FILE} holds no projector and predictor: expected the whole SimSiam model"
                )
            if infer_arch(whole_backbone, f"{where}/{SIMSIAM_FILE}") != (section.arch, section.small_stem):
                raise FolderError(f"{where}/{SIMSIAM_FILE} is not of the {section.arch} that config.json names")
            dims = (int(whole["predictor.3.weight"].shape[0]), int(whole["predictor.0.weight"].shape[0]))
            if section.dim is not None and dims != (section.dim, section.pred_dim):
                raise FolderError(
                    f"{where}/{SIMSIAM_FILE} has dim/pred_dim {dims}, config.json says {(section.dim, section.pred_dim)}"
                )
        elif section.has_simsiam:
            raise FolderError(f"{where}: config.json says simsiam.safetensors is included, and it is missing")
        if (folder / RESULTS_FILE).is_file():
            read_results(folder / RESULTS_FILE)
    except (WeightsError, ResultsError) as err:
        raise FolderError(str(err)) from None
    return section
