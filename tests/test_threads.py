import threading

import scipy.linalg  # noqa: F401 - loads scipy's own BLAS copy
from threadpoolctl import threadpool_info

from fewshot._threads import single_threaded_blas


def blas_threads() -> list[int]:
    """This thread's view of every BLAS pool's thread count."""
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_one_blas_thread_inside_and_the_setting_restored_after():
    before = blas_threads()
    assert before, "numpy's BLAS should be visible to threadpoolctl"
    with single_threaded_blas():
        assert set(blas_threads()) == {1}
        with single_threaded_blas():                       # re-entrant
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}
    assert blas_threads() == before


def test_a_block_in_another_thread_leaves_the_setting_as_it_was():
    before = blas_threads()
    seen: list[set[int]] = []

    def block() -> None:
        with single_threaded_blas():
            seen.append(set(blas_threads()))

    worker = threading.Thread(target=block)
    worker.start()
    worker.join(10)
    assert seen == [{1}]
    assert blas_threads() == before
