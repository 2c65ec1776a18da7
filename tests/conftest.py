import pytest
import torch

from pnerf_fast._native import native

# Tests use two threads, like the CI machine.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def C():
    """The native extension; tests that compare against it fail (not skip) when it is
    missing, because CI always builds it."""
    mod = native()
    assert mod is not None, "pnerf_fast._C is not built: run `pip install -e . --no-build-isolation`"
    return mod


@pytest.fixture
def one_thread():
    """One torch thread for the test: the hash-grid backward sums in a fixed order, so
    results compare exactly."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cuda_ok() -> bool:
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
