"""The output distributions' maths: normalisation, the three regions of the discretized logistic, the coupling of
a pixel's channels, and that the CDF every sampler inverts is the distribution the likelihood scores."""

from __future__ import annotations

import math

import pytest
import torch

from genzoo.errors import GenzooError
from genzoo.nn.distributions import (
    Bernoulli,
    Categorical,
    DiscretizedLogisticMixture,
    log_sigmoid_difference,
    output_distribution,
    scaled,
)


def random_params(d, b=3, h=2, w=3, spread=2.0, seed=0):
    return torch.randn(b, d.params, h, w, generator=torch.Generator().manual_seed(seed)) * spread


def every_level_log_prob(d, params, x):
    """(B, C, H, W) log p(x_c | x_<c) of each sub-pixel, read from ``level_log_probs`` at x's own levels."""
    return d.level_log_probs(params, scaled(d.levels, x)).gather(2, x.unsqueeze(2)).squeeze(2)


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_probabilities_over_all_levels_sum_to_one(levels, channels):
    d = DiscretizedLogisticMixture(channels, levels, components=4)
    for spread in (0.5, 3.0, 10.0):  # up to scales of e^-7 (the clamp) and means far outside [-1, 1]
        params = random_params(d, spread=spread)
        x = torch.randint(levels, (3, channels, 2, 3))
        probs = d.level_log_probs(params, scaled(levels, x)).double().exp().sum(2)  # (B, C, H, W), x_<c from x
        torch.testing.assert_close(probs, torch.ones_like(probs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_the_joint_of_a_pixel_is_the_product_of_its_conditionals_and_sums_to_one(levels):
    # log_prob scores the joint with one log-sum-exp over components; level_log_probs gives the conditionals with
    # the components re-weighted by the earlier channels: the two must agree, and the joint over every colour of
    # one pixel must sum to 1.
    d = DiscretizedLogisticMixture(3, levels, components=3)
    params = random_params(d, b=1, h=1, w=1)
    grid = torch.arange(min(levels, 9)) * (levels - 1) // (min(levels, 9) - 1)  # some levels, both edges included
    x = torch.cartesian_prod(grid, grid, grid).view(-1, 3, 1, 1)
    params = params.expand(len(x), -1, -1, -1)
    torch.testing.assert_close(d.log_prob(params, x), every_level_log_prob(d, params, x).sum((1, 2, 3)),
                               atol=1e-4, rtol=1e-5)
    if levels <= 17:
        every = torch.cartesian_prod(*[torch.arange(levels)] * 3).view(-1, 3, 1, 1)
        total = d.log_prob(params[:1].expand(len(every), -1, -1, -1), every).double().exp().sum()
        assert total.item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_uniform_parameters_give_log2_levels_bits_per_dim(levels):
    shape = (2, 1, 3, 3)
    x = torch.randint(levels, shape)
    dims = math.prod(shape[1:]) * math.log(2)
    categorical = Categorical(1, levels)
    assert (-categorical.log_prob(torch.zeros(2, levels, 3, 3), x) / dims).tolist() == pytest.approx(
        [math.log2(levels)] * 2, abs=1e-6)
    # A mixture of one sharp component on each level with equal weights is uniform over the levels.
    d = DiscretizedLogisticMixture(1, levels, components=levels)
    centres = scaled(levels, torch.arange(levels))
    theta = torch.cat([torch.zeros(levels), centres, torch.full((levels,), -7.0)])  # log π, μ, log s
    params = theta.view(1, -1, 1, 1).expand(2, -1, 3, 3)
    bpd = -d.log_prob(params, x) / dims
    assert bpd.tolist() == pytest.approx([math.log2(levels)] * 2, abs=1e-4)


@pytest.mark.parametrize("levels", [17, 256])
def test_one_sharp_component_puts_almost_all_mass_on_one_level(levels):
    d = DiscretizedLogisticMixture(1, levels, components=1)
    for level in (0, levels // 3, levels - 1):
        mean = scaled(levels, torch.tensor(level)).item()
        params = torch.tensor([0.0, mean, -7.0]).view(1, 3, 1, 1)
        probs = d.level_log_probs(params, torch.zeros(1, 1, 1, 1)).exp()[0, 0, :, 0, 0]
        # log s is clamped at −7 (the paper's code): a bin of 2/255 then holds 97 % of the sharpest logistic
        assert probs.argmax().item() == level and probs[level].item() > (0.999 if levels == 17 else 0.97)


def test_log_sigmoid_difference_is_right_in_the_middle_and_far_in_both_tails():
    a = torch.tensor([0.1, 3.0, 40.0, -40.0, 200.0, -200.0, 1e-3], dtype=torch.float64)
    b = a - torch.tensor([0.2, 0.5, 1.0, 1.0, 0.01, 0.01, 2e-3], dtype=torch.float64)
    got = log_sigmoid_difference(a.float(), b.float()).double()
    # The reference in float64, on the side of 0 where the two sigmoids are small: σ(a) − σ(b) = σ(−b) − σ(−a).
    upper = a > 0
    want = torch.where(upper, torch.log(torch.sigmoid(-b) - torch.sigmoid(-a)),
                       torch.log(torch.sigmoid(a) - torch.sigmoid(b)))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # where the plain float32 difference is 0 (both tails) or too coarse to trust (the reference code's fallback)
    plain = torch.sigmoid(a.float()) - torch.sigmoid(b.float())
    assert (plain[2:6] < 1e-5).all() and torch.isfinite(got).all()


def test_the_edge_bins_take_the_tails_and_the_middle_bins_the_cdf_difference():
    levels = 5
    d = DiscretizedLogisticMixture(1, levels, components=1)
    mu, log_s = 0.3, math.log(0.4)
    params = torch.tensor([0.0, mu, log_s]).view(1, 3, 1, 1)
    probs = d.level_log_probs(params, torch.zeros(1, 1, 1, 1)).double().exp()[0, 0, :, 0, 0]
    s, half = 0.4, 1 / (levels - 1)
    cdf = lambda v: 1 / (1 + math.exp(-(v - mu) / s))  # noqa: E731
    centres = [2 * v / (levels - 1) - 1 for v in range(levels)]
    want = [cdf(centres[0] + half)] + [cdf(c + half) - cdf(c - half) for c in centres[1:-1]] + [
        1 - cdf(centres[-1] - half)]
    assert probs.tolist() == pytest.approx(want, abs=1e-6)


def test_later_channels_move_with_earlier_ones_through_the_coefficients():
    levels = 256
    d = DiscretizedLogisticMixture(3, levels, components=1)
    # one component: means 0, sharp scales, coefficients tanh(α) ≈ 1 for (G, R) and (B, G), 0 for (B, R)
    theta = torch.tensor([0.0, 0.0, 0.0, 0.0, -5.0, -5.0, -5.0, 20.0, 0.0, 20.0]).view(1, 10, 1, 1)
    for red in (30, 200):
        x = torch.tensor([red, 0, 0]).view(1, 3, 1, 1)
        green = d.level_log_probs(theta, scaled(levels, x))[0, 1, :, 0, 0].argmax().item()
        assert abs(green - red) <= 1  # G's mean is R's value
        x[0, 1] = green
        blue = d.level_log_probs(theta, scaled(levels, x))[0, 2, :, 0, 0].argmax().item()
        assert abs(blue - green) <= 1


def test_the_components_are_reweighted_by_the_earlier_channels():
    # Two components, equally likely: (R, G) both dark or both bright. Seeing a bright R makes a bright G certain.
    levels = 17
    d = DiscretizedLogisticMixture(2, levels, components=2)
    log_pi, mu = [0.0, 0.0], [-0.8, 0.8, -0.8, 0.8]  # μ (C, M): R, then G
    theta = torch.tensor(log_pi + mu + [-4.0] * 4 + [0.0, 0.0]).view(1, -1, 1, 1)
    x = torch.tensor([16, 0]).view(1, 2, 1, 1)
    green = d.level_log_probs(theta, scaled(levels, x)).exp()[0, 1, :, 0, 0]
    assert green[levels // 2 :].sum().item() > 0.99
    red = d.level_log_probs(theta, scaled(levels, x)).exp()[0, 0, :, 0, 0]
    assert red[: levels // 2].sum().item() == pytest.approx(0.5, abs=0.01)  # R alone: both components


@pytest.mark.parametrize("name", ["categorical", "bernoulli", "logistic_mixture"])
def test_cdf_is_the_distribution_the_likelihood_scores_and_samples_follow_it(name):
    levels = 2 if name == "bernoulli" else 5
    d = output_distribution(name, 2, levels, components=3)
    params = random_params(d, b=1, h=1, w=1)
    x = torch.tensor([[[[1]], [[0]]]])
    theta = params.movedim(1, -1)  # (1, 1, 1, P)
    earlier = x.movedim(1, -1)
    for k in range(2):
        cdf = d.cdf(theta, k, earlier[..., :k])[0, 0, 0].double()
        probs = torch.diff(cdf, prepend=cdf.new_zeros(1))
        torch.testing.assert_close(probs, d.level_log_probs(params, scaled(levels, x))[0, k, :, 0, 0].double().exp(),
                                   atol=1e-6, rtol=0)
    torch.manual_seed(0)
    draws = d.sample(params.expand(20000, -1, -1, -1))[:, 0, 0, 0]  # channel 0's marginal
    freq = torch.bincount(draws, minlength=levels).double() / len(draws)
    want = d.level_log_probs(params, scaled(levels, x))[0, 0, :, 0, 0].double().exp()
    assert (freq - want).abs().max().item() < 0.015  # 20k draws: about 4 standard errors


def test_bernoulli_is_the_two_level_categorical_with_one_logit():
    theta = torch.randn(4, 3, 2, 2)
    x = torch.randint(2, (4, 3, 2, 2))
    logits = torch.stack([torch.zeros_like(theta), theta], dim=2)  # (B, C, 2, H, W)
    torch.testing.assert_close(Bernoulli(3).log_prob(theta, x), Categorical(3, 2).log_prob(logits, x))
    assert isinstance(output_distribution("categorical", 1, 2), Bernoulli)  # one logit, not two


def test_bad_choices_are_refused_with_one_sentence():
    with pytest.raises(GenzooError, match="model.decoder='gaussian' is not an output distribution: use one of"):
        output_distribution("gaussian", 1, 17, key="model.decoder")
    with pytest.raises(GenzooError, match="Bernoulli output models 2 levels, and this data has 17"):
        output_distribution("bernoulli", 1, 17)
    with pytest.raises(GenzooError, match="components=0 has nothing to mix"):
        output_distribution("logistic_mixture", 1, 17, components=0)
