import pytest

from servesim.hardware import get_gpu
from servesim.models import get_model


@pytest.fixture
def a100():
    return get_gpu("a100-80gb-pcie")


@pytest.fixture
def llama7b():
    return get_model("llama-7b")
