from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Run a module's torch work on one intra-op thread.

    On 2 shared cores a second intra-op thread mostly spins; one thread is faster and steadier.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def postgres_cluster():  # noqa: ANN201  (a tests.pg_helpers.PgCluster)
    """A throwaway PostgreSQL cluster for the whole session (tests/pg_helpers.py), removed after.

    Skipped only where PostgreSQL's server is not installed, and never on CI (``CI`` set): there the
    tests must run, so a missing server is a failure.
    """
    from tests import pg_helpers

    bindir = pg_helpers.find_bindir()
    if bindir is None:
        reason = ("PostgreSQL's server (initdb, pg_ctl, postgres) is not installed: apt-get install postgresql "
                  "(.ci/run does)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the PostgreSQL tests must run")
        pytest.skip(reason)
    cluster = pg_helpers.start_cluster(bindir)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster) -> str:
    """The cluster's maintenance database (``postgres``) as its superuser: a postgresql+psycopg:// URL."""
    return postgres_cluster.url()


@pytest.fixture
def pg_db(postgres_cluster) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test: its postgresql+psycopg:// URL (superuser, Unix
    socket). Dropped after the test, with any session it left open."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The two scan test models (tests/scan_helpers.py: a fake-scoring and a real-scoring ONNX), made once."""
    from tests import scan_helpers as H

    return H.make_models(tmp_path_factory.mktemp("models"))
