"""The collapse statistics: what a healthy and a collapsed output give."""

import math

import pytest
import torch
from torch import nn

from simsiam_hub.monitor import collapse_ratio, std_of_l2_normalized, top_direction_share, two_point_ratio


def _after_output_bn(x: torch.Tensor) -> torch.Tensor:
    """x through the reference projector's last layer: an affine-free BatchNorm in train mode."""
    return nn.BatchNorm1d(x.shape[1], affine=False).train()(x)


def test_healthy_output_spreads_over_many_directions():
    torch.manual_seed(0)
    z = _after_output_bn(torch.randn(256, 2048))
    assert collapse_ratio(std_of_l2_normalized(z), 2048) == pytest.approx(1.0, abs=0.02)
    assert top_direction_share(z) < 0.02  # random directions: about (1 + sqrt(256/2048))^2 / 256


@pytest.mark.parametrize("opposite", [1, 2, 5])
def test_collapse_under_batchnorm_is_two_points_with_the_predicted_std(opposite):
    """Every sample mapped to one feature vector but ``opposite`` of them: after the output BN,
    z takes two opposite values and the std sits at 2 sqrt(p(1-p)) x 1/sqrt(d), not at 0."""
    n, d = 256, 2048
    torch.manual_seed(0)
    direction = 10 * torch.randn(d).sign()  # every channel's batch variance far above BN's eps
    scale = torch.ones(n, 1)
    scale[:opposite] = -3.0
    z = _after_output_bn(scale * direction + 1e-6 * torch.randn(n, d))
    # torch's std is the unbiased one: sqrt(n / (n - 1)) above the population std of the formula
    expected = two_point_ratio(n, opposite) * math.sqrt(n / (n - 1))
    assert collapse_ratio(std_of_l2_normalized(z), d) == pytest.approx(expected, rel=1e-3)
    assert top_direction_share(z) > 0.999
    assert two_point_ratio(256) == pytest.approx(0.1248, abs=1e-4)


def test_a_constant_output_has_zero_std_and_lies_on_one_line():
    z = torch.randn(1, 64).expand(32, 64)
    assert std_of_l2_normalized(z) == pytest.approx(0.0, abs=1e-6)
    assert top_direction_share(z) == pytest.approx(1.0, abs=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"expected z of shape \(N >= 2, d\), got \(5,\)"):
        top_direction_share(torch.randn(5))
    with pytest.raises(ValueError, match="expected 0 < opposite < batch, got opposite=0, batch=8"):
        two_point_ratio(8, 0)
