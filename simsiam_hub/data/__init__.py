"""Every image source behind one map-style interface, and the augmentation paths.

``datasets``: the labelled sets (ImageFolder, Fashion-MNIST, CIFAR-10, synthetic), the registry of
every source and the seeded views; ``sources``: the user's own images (a folder, a file list,
WebDataset shards, a Hugging Face dataset); ``augment``: the reference's MoCo v2 augmentation and the eval view; ``fast_augment``:
the same draws computed faster; ``device_augment``: the loader crops, the device finishes;
``sources``: unlabelled folders, file lists, tar shards and Hugging Face datasets for pretraining.
"""

DEFAULT_IMAGE_SIZE = 224  # the reference's crop size, and every command's default


def __getattr__(name: str):
    # `simsiam_hub.data` was the module `datasets` is now: its names keep working for one release.
    import warnings

    from . import datasets

    if name.startswith("__") or not hasattr(datasets, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"simsiam_hub.data.{name} moved to simsiam_hub.data.datasets.{name}", DeprecationWarning, stacklevel=2
    )
    return getattr(datasets, name)
