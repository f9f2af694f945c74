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


def test_side_by_side_keeps_the_order_and_runs_on_two_threads(monkeypatch):
    import fewshot._threads as threads

    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    names: set[str] = set()
    both_started = threading.Barrier(2, timeout=10)

    def work(i: int) -> int:
        names.add(threading.current_thread().name)
        if i < 2:
            both_started.wait()                             # fails (BrokenBarrierError) unless two run at once
        return i * i

    assert threads.map_side_by_side(work, range(7)) == [i * i for i in range(7)]
    assert len(names) == 2 and threading.current_thread().name not in names


def test_side_by_side_on_one_thread_runs_in_the_caller(monkeypatch):
    import fewshot._threads as threads

    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    names: list[str] = []
    assert threads.map_side_by_side(lambda i: names.append(threading.current_thread().name) or -i, [1, 2]) == [-1, -2]
    assert names == [threading.current_thread().name] * 2
    assert threads.map_side_by_side(abs, []) == []


def test_class_sums_equal_adding_each_row(rng):
    import numpy as np

    from fewshot._core import class_sums

    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.choice([0, 2, 3], size=40)                     # classes 1 and 4 have no rows
    expected = np.zeros((5, 5))
    np.add.at(expected, y, x.astype(np.float64))
    sums = class_sums(x, y, 5)
    assert sums.dtype == np.float64 and np.allclose(sums, expected, atol=1e-12)
    assert (sums[[1, 4]] == 0).all()
    assert class_sums(np.zeros((0, 5), np.float32), np.zeros(0, np.int64), 3).shape == (3, 5)


def test_torch_threads_restores_after_nested_and_overlapping_blocks():
    """Nested blocks put back the enclosing block's count; blocks overlapping in two threads leave the count from
    before the first of them once both ended, whichever ends first (a per-block save-and-restore would leave 1)."""
    import torch

    from fewshot._core import torch_threads

    before = torch.get_num_threads()
    outer = before + 1
    with torch_threads(outer):
        assert torch.get_num_threads() == outer
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == outer
    assert torch.get_num_threads() == before

    a_entered, b_entered, a_left = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def a() -> None:
        with torch_threads(1):
            a_entered.set()
            b_entered.wait(10)
        a_left.set()

    def b() -> None:
        a_entered.wait(10)
        with torch_threads(1):                 # saves nothing of its own: A's block is still open
            b_entered.set()
            a_left.wait(10)
            seen["inside_b_after_a"] = torch.get_num_threads()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"inside_b_after_a": 1}
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
