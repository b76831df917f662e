import os

# Under pytest-xdist each worker runs one test at a time on one core's share: torch's and TensorFlow's thread
# pools sized for every core would put two workers' threads on each core (three times slower, measured on the
# timm models). Set before either framework is imported; a value given in the environment is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (default) keeps `make test` well inside CI's time on 2 cores; "thorough" is for
# a long local run: XCONV_HYPOTHESIS_PROFILE=thorough make test
_common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
}
settings.register_profile("ci", max_examples=int(os.environ.get("XCONV_EXAMPLES", "300")), **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.register_profile("dev", max_examples=10, **_common)
settings.load_profile(os.environ.get("XCONV_HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ("torch", "tf")


def require_backend(name: str):
    """The backend module, or a skip locally; in CI (CI=true) a missing framework is a failure."""
    import xconv.backends as registry

    try:
        return registry.get_backend(name)
    except ImportError as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"backend {name!r} is not available in CI: {e}")
        pytest.skip(f"backend {name!r} not installed: {e}")


@pytest.fixture(scope="session", params=BACKENDS, ids=BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


@pytest.fixture(scope="session")
def both_backends():
    for name in BACKENDS:
        require_backend(name)
