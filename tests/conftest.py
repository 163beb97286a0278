pytest_plugins = ["tests.plugins.registry", "tests.plugins.akua"]


import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
