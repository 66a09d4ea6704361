import pytest

from tests.fixtures.datasets import write_images_dataset


@pytest.fixture
def images_dataset(tmp_path):
    return write_images_dataset(tmp_path / "data")
