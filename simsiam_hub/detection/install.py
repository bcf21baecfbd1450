"""Which Detectron2 is installed, and the ``simsiam-hub-detection`` entry point that says how
to install it when it is missing (Detectron2 has no wheel on PyPI), instead of a traceback."""

from __future__ import annotations

import importlib
import sys

INSTALL_HINT = (
    "detectron2 is not installed (it has no wheel on PyPI): from a simsiam-hub checkout run `make detectron2`, "
    "or build upstream from source: pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git' "
    "(see docs/hub.md)"
)


def detectron2_description() -> str:
    """One line: the Detectron2 version and location, and whether its compiled ``_C`` loads
    (without it: no deformable convolutions, no rotated boxes, no fast COCO evaluator)."""
    import detectron2

    try:
        importlib.import_module("detectron2._C")
        compiled = "its compiled _C extension loaded"
    except ImportError as err:
        compiled = (
            f"its compiled _C extension does not load ({str(err).splitlines()[0][:120]}): deformable convolutions, "
            "rotated boxes and the fast COCO evaluator are unavailable; the C4 path uses torchvision's ops"
        )
    return f"detectron2 {getattr(detectron2, '__version__', '?')} from {detectron2.__path__[0]}; {compiled}"


def detection_cli(argv=None) -> int:
    """``simsiam-hub-detection``: the transfer script, or one line saying how to get Detectron2."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        print(f"simsiam-hub-detection: error: {INSTALL_HINT}", file=sys.stderr)
        return 1
    # The transfer script is shipped as simsiam_hub.transfer (the repository's transfer/).
    return importlib.import_module("simsiam_hub.transfer.train_net").cli(argv)
