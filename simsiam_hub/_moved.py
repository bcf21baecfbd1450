"""Import paths of modules that moved into sub-packages: they keep working for one release,
with a DeprecationWarning naming the new path."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "data": "data.datasets",
    "augment": "data.augment",
    "fast_augment": "data.fast_augment",
    "device_augment": "data.device_augment",
    "knn": "eval.knn",
    "probe": "eval.probe",
    "lincls": "eval.lincls",
    "evaluate": "eval.sources",
    "folder": "hub.folder",
    "weights": "hub.weights",
    "card": "hub.card",
    "export": "hub.export",
    "repo": "hub.repo",
    "loading": "hub.loading",
    "registry": "hub.registry",
    "results": "hub.results",
    "detectron2": "detection.convert",
    "synthetic_detection": "detection.synthetic",
}
PACKAGE = __name__.rpartition(".")[0]


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``simsiam_hub.knn`` as ``simsiam_hub.eval.knn`` (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.rpartition(".")
        if package == PACKAGE and old in MOVED and old != "data":  # `data` is the new package itself
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = f"{PACKAGE}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module(new)

    def exec_module(self, module):
        pass

    def get_code(self, fullname):
        """The new module's code, for ``python -m OLD_PATH`` (runpy runs it as ``__main__``)."""
        new = f"{PACKAGE}.{MOVED[fullname.rpartition('.')[2]]}"
        print(f"{fullname} moved to {new}; the old path goes in the next release", file=sys.stderr)
        return importlib.util.find_spec(new).loader.get_code(new)


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
