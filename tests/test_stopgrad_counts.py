"""docs/stopgrad_ablation.md states what its committed logs say: docs/run_logs/stopgrad_counts.py
re-derives every figure from docs/run_logs/ and the document must contain each as derived."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def counts():
    spec = importlib.util.spec_from_file_location("stopgrad_counts", ROOT / "docs" / "run_logs" / "stopgrad_counts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_document_states_every_figure_its_logs_give():
    module = counts()
    figures = module.figures()
    assert len(figures) >= 30
    assert module.missing() == {}, (
        "docs/stopgrad_ablation.md differs from its logs: run docs/run_logs/stopgrad_counts.py --check"
    )


def test_the_check_catches_a_changed_figure(tmp_path):
    module = counts()
    text = module.DOC.read_text()
    figures = module.figures()
    for name in ("levels count", "13ep row without", "5ep share without"):
        changed = tmp_path / f"{name}.md"
        snippet = module.normalised(figures[name])
        # one digit of the figure's text changed, as a stale copy would have it
        digit = next(i for i, ch in enumerate(snippet) if ch.isdigit() and ch != "0")
        wrong = snippet[:digit] + str(int(snippet[digit]) - 1) + snippet[digit + 1 :]
        changed.write_text(module.normalised(text).replace(snippet, wrong))
        assert name in module.missing(changed), name


def test_the_levels_are_those_of_a_two_valued_batchnormed_output():
    """The levels the document names, 2 sqrt(p(1-p)) for p = k/256, are std x sqrt(d) of the
    reference projector's last layer (an affine-free BatchNorm in training mode) fed a batch that
    takes two values, k of 256 samples on one side: computed here on such a batch."""
    import torch

    from simsiam_hub.monitor import std_of_l2_normalized, top_direction_share

    module = counts()
    g = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm1d(2048, affine=False).train()
    for k in range(1, 6):
        before = torch.randn(2048, generator=g).repeat(256, 1)
        before[:k] = torch.randn(2048, generator=g)
        with torch.no_grad():
            z = bn(before)
        measured = std_of_l2_normalized(z) * math.sqrt(2048)
        # within 1% (BatchNorm's eps shrinks the channels where the two values nearly agree;
        # the next level is at least 10% away)
        assert abs(measured - module.two_point_ratio(k)) < 1e-2 * module.two_point_ratio(k), (k, measured)
        assert top_direction_share(z) > 0.999
        assert f"{module.two_point_ratio(k):.3f}" in module.figures()["levels"]
