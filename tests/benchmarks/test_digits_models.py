"""The residual digits models of the harness (``benchmarks/harness/models/digits.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.harness import config, train
from benchmarks.harness.datasets import ProtocolData, TensorPairs
from benchmarks.harness.models import digits as digits_models


def _pixels(n: int = 16, d: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (n, d), generator=g).to(torch.float32)


def _normalised_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances of the L2-normalised rows, float64 (independent reference)."""
    x = x.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


class TestWideResidualDigitsMLP:
    @pytest.mark.parametrize("embedding_size", [64, 65, 128, 256])
    def test_zero_scale_starts_at_the_raw_pixels_padded_with_zeros(self, embedding_size):
        x = _pixels()
        model = digits_models.WideResidualDigitsMLP(64, 32, embedding_size, extra_init_scale=0.0)
        z = model(x).detach().numpy()
        assert z.shape == (16, embedding_size)
        expected = np.zeros((16, embedding_size))
        expected[:, :64] = x.numpy()
        np.testing.assert_array_equal(z, expected)

    def test_default_start_is_identity_plus_small_extra_coordinates(self):
        x = _pixels(seed=1)
        torch.manual_seed(0)
        wide = digits_models.WideResidualDigitsMLP(64, 32, 128)
        torch.manual_seed(0)
        unscaled = digits_models.WideResidualDigitsMLP(64, 32, 128, extra_init_scale=1.0)
        z, z1 = wide(x).detach(), unscaled(x).detach()
        torch.testing.assert_close(z[:, :64], x, rtol=0, atol=0)
        # the extra coordinates are the unscaled ones times 0.1, and not all zero
        torch.testing.assert_close(z[:, 64:], 0.1 * z1[:, 64:], rtol=1e-5, atol=1e-7)
        assert z[:, 64:].abs().max() > 0
        # small next to the pixels: the start is close to the no_learning geometry
        assert (z[:, 64:].norm(dim=1) < 0.1 * x.norm(dim=1)).all()

    def test_zero_start_retrieval_geometry_is_the_no_learning_row(self):
        x = _pixels(seed=1)
        z = digits_models.WideResidualDigitsMLP(64, 32, 128, 0.0)(x).detach().numpy()
        np.testing.assert_allclose(
            _normalised_distances(z), _normalised_distances(x.numpy()), atol=1e-12
        )

    @pytest.mark.parametrize("scale, moves", [(0.0, False), (0.1, True)])
    def test_extra_coordinates_move_only_from_a_nonzero_start(self, scale, moves):
        # all-zero extra coordinates are a stationary point of a loss on normalised embeddings
        torch.manual_seed(0)
        x = _pixels(seed=2)
        y = torch.arange(16) % 4
        model = digits_models.WideResidualDigitsMLP(64, 32, 96, extra_init_scale=scale)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(3):
            opt.zero_grad()
            u = torch.nn.functional.normalize(model(x), dim=1)
            same = (y[:, None] == y[None, :]).float()
            loss = -(u @ u.T * same).mean() + (u @ u.T * (1 - same)).mean()
            loss.backward()
            opt.step()
        z = model(x).detach()
        assert bool(z[:, 64:].abs().max() > 0) is moves

    def test_rejects_embedding_narrower_than_input(self):
        with pytest.raises(ValueError, match="embedding_size must be at least the input size 64"):
            digits_models.WideResidualDigitsMLP(64, 32, 32)

    def test_rejects_negative_scale(self):
        with pytest.raises(ValueError, match="extra_init_scale must be non-negative"):
            digits_models.WideResidualDigitsMLP(64, 32, 128, extra_init_scale=-1.0)


class TestResidualDigitsMLP:
    def test_starts_at_the_raw_pixels(self):
        x = _pixels(seed=5)
        z = digits_models.ResidualDigitsMLP(64, 32, 64)(x)
        torch.testing.assert_close(z, x, rtol=0, atol=0)

    def test_rejects_other_embedding_size(self):
        with pytest.raises(ValueError, match="embedding_size must equal the input size 64"):
            digits_models.ResidualDigitsMLP(64, 32, 128)


class TestRegistration:
    @pytest.mark.parametrize(
        "name, cls, size",
        [
            ("digits_residual_mlp", digits_models.ResidualDigitsMLP, 64),
            ("digits_wide_residual_mlp", digits_models.WideResidualDigitsMLP, 128),
        ],
    )
    def test_build_models_maps_the_name(self, name, cls, size):
        x = _pixels(n=4)
        pairs = TensorPairs(x, torch.arange(4))
        cfg = config.parse_config(
            {
                "model": {"name": name, "embedding_size": size, "hidden": 16},
                "methods": [{"name": "no_learning", "no_learning": True}],
            }
        )
        data = _protocol_data(pairs)
        trunk, embedder = train.build_models(cfg, data, no_learning=False)
        assert type(trunk) is cls
        assert isinstance(embedder, torch.nn.Identity)
        assert trunk(x).shape == (4, size)


def _protocol_data(pairs):
    return ProtocolData(
        name="fold",
        train=pairs,
        query=pairs,
        num_train_classes=4,
        input_kind="vector",
        description="test",
    )
