"""Shared fixtures: device, dtype and one tolerance table keyed by dtype."""

from __future__ import annotations

import os

import pytest
import torch

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; only tests/properties needs it
    settings = None

if settings is not None:
    # "ci" (the default): derandomised, so every run draws the same 500 examples per property and
    # a failure reproduces; no example database written into the tree. HYPOTHESIS_PROFILE=dev
    # explores new random examples locally.
    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile(
        "ci", derandomize=True, max_examples=500, database=None, print_blob=True, **_common
    )
    settings.register_profile("dev", max_examples=500, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption(
        "--cuda", action="store_true", help="also run device-parametrised tests on CUDA"
    )


def _devices(config):
    devices = ["cpu"]
    if config.getoption("--cuda") and torch.cuda.is_available():
        devices.append("cuda")
    return devices


#: Modules marked slow here rather than by their own ``pytestmark`` (every test of them trains
#: cells end to end). Everywhere else a slow test or module says so itself with
#: ``@pytest.mark.slow`` / ``pytestmark = pytest.mark.slow``.
SLOW_MODULES: tuple[str, ...] = ()


def pytest_collection_modifyitems(config, items):
    root = config.rootpath
    for item in items:
        if item.path.relative_to(root).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _devices(metafunc.config))


# relative tolerances of a value computed in `dtype` against a float64 reference fed the same
# (already rounded) input
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=2e-2, atol=1e-2),  # autocast: the input itself is rounded
    torch.float16: dict(rtol=5e-3, atol=1e-3),
}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def tol(dtype):
    return TOLERANCES[dtype]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
