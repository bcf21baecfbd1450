"""simsiam-hub: SimSiam pretraining, Hub-ready ResNet-50 backbones and detection transfer."""

__version__ = "0.1.0"
__all__ = ["__version__", "from_pretrained", "push_to_hub", "load_backbone_state_dict"]

# The Hub API, imported on first use so that `import simsiam_hub` stays light.
_LAZY = {"from_pretrained": "hub.loading", "push_to_hub": "hub.repo", "load_backbone_state_dict": "hub.loading"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from . import _moved  # noqa: E402  (after __version__, which the moved modules read)

_moved.install()
