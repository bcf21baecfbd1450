"""simsiam-hub: SimSiam pretraining, Hub-ready ResNet-50 backbones and detection transfer."""

__version__ = "0.1.0"

# The Hub API, imported on first use so that `import simsiam_hub` stays light.
_LAZY = {"from_pretrained": "loading", "push_to_hub": "repo", "load_backbone_state_dict": "loading"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
