from __future__ import annotations

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
