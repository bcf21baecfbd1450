"""Fixtures shared by several test files: a Hub-API server on 127.0.0.1, checkpoints that
cost a training step or a ResNet-50 to make (each made once), and a recorder of the reference
augmentation's calls."""

from __future__ import annotations

import pytest
import torchvision.transforms.functional as TVF
from checkpoints import make_official_checkpoint, make_training_checkpoint
from fake_hub import FakeHub
from PIL import ImageFilter
from reference import JITTER_OPS


@pytest.fixture(scope="module")
def fake_hub():
    with FakeHub() as hub:
        yield hub


@pytest.fixture(scope="session")
def training_checkpoint(tmp_path_factory):
    """A real training checkpoint of a ResNet-50 SimSiam, from one engine step at 32 px."""
    return make_training_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory):
    """``checkpoint_0099.pth.tar`` in the reference's layout, and the model it holds."""
    return make_official_checkpoint(tmp_path_factory.mktemp("official"))


@pytest.fixture
def record_reference(monkeypatch):
    """Calls the reference makes, as (name, value) events, by wrapping what it calls."""
    events: list[tuple] = []

    def wrap(name, record):
        original = getattr(TVF, name)

        def wrapper(*args, **kwargs):
            events.append(record(*args))
            return original(*args, **kwargs)

        monkeypatch.setattr(TVF, name, wrapper)

    wrap("resized_crop", lambda img, top, left, height, width, *rest: ("crop", (top, left, height, width)))
    for name in JITTER_OPS:
        wrap(name, lambda img, factor, _name=name: (_name, factor))
    wrap("rgb_to_grayscale", lambda *args: ("grayscale", None))
    wrap("hflip", lambda *args: ("flip", None))

    class RecordingBlur(ImageFilter.GaussianBlur):
        def __init__(self, radius=2):
            events.append(("blur", radius))
            super().__init__(radius)

    monkeypatch.setattr(ImageFilter, "GaussianBlur", RecordingBlur)
    return events
