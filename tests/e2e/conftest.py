import pytest

from tests.support.stack import running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("e2e") / "data") as s:
        yield s
