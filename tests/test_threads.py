"""vecnn.threads: the BLAS thread count chosen by timing the training steps.

The governor is driven here by a simulated machine (a clock that advances by the cost of each
step at the thread count in force), so every decision is deterministic; one test runs the real
thing inside ``fit`` and checks that the user's thread count comes back.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import vecnn as vn
from vecnn import layers as L
from vecnn import threads as T


class Machine:
    """Seconds per sample as a function of (step, threads); ``run`` drives a governor."""

    def __init__(self, cost, wide=2, m=128):
        self.cost, self.m, self.t, self.step = cost, m, 0.0, 0
        self.threads_log = []
        self.now = None
        self.gov = T.Governor(self._set, wide, clock=lambda: self.t)

    def _set(self, n):
        self.now = n

    def run(self, steps):
        for _ in range(steps):
            self.t += self.cost(self.step, self.now) * self.m
            self.threads_log.append(self.now)
            self.gov.tick(self.m)
            self.step += 1
        return self


# a step of 128 samples takes 12.8 ms alone on two threads: a window is WINDOW_STEPS steps
STEPS = T.WINDOW_STEPS


def alone(step, threads):  # two threads 15% faster than one
    return {1: 1.15e-4, 2: 1e-4}[threads]


def test_alone_it_keeps_all_threads_and_tries_one_rarely():
    m = Machine(alone).run(20_000)
    assert m.gov.threads == 2 and m.gov.history == []
    one = m.threads_log.count(1)
    assert 0 < one < 0.02 * len(m.threads_log)  # it did try, seldom (backing off)
    total = sum(alone(0, t) for t in m.threads_log)
    assert total < 1.003 * 20_000 * alone(0, 2)  # alone loses nothing measurable


def test_noise_alone_does_not_look_like_contention():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.7, 1.3, 40_000)  # +-30% from step to step, as on a shared machine
    m = Machine(lambda step, threads: alone(step, threads) * noise[step]).run(40_000)
    assert m.threads_log.count(2) > 0.97 * len(m.threads_log)


def test_beside_a_busy_process_it_drops_to_one_thread_at_once():
    busy_from = 2_000

    def cost(step, threads):  # multi-threaded BLAS collapses 10-100x beside a busy process
        if step >= busy_from:
            return {1: 1.3e-4, 2: 20e-4}[threads]
        return alone(step, threads)

    m = Machine(cost).run(8_000)
    assert m.gov.threads == 1
    first_down = next(s for s, n in m.gov.history if n == 1)
    assert busy_from < first_down <= busy_from + 3 * STEPS + 2
    # tries of two threads while busy are rare and cut short: the share of time lost is small
    busy = m.threads_log[first_down:]
    spent = sum(cost(busy_from, t) for t in busy)
    assert spent < 1.15 * len(busy) * cost(busy_from, 1)


def test_it_goes_back_up_when_the_other_process_ends():
    def cost(step, threads):
        if 1_000 <= step < 3_000:
            return {1: 1.3e-4, 2: 20e-4}[threads]
        return alone(step, threads)

    m = Machine(cost).run(3_000 + 3 * T.MAX_GAP * STEPS)
    assert [n for _, n in m.gov.history][:1] == [1]
    assert m.gov.threads == 2
    back_up = next(s for s, n in m.gov.history if n == 2 and s >= 3_000)
    assert back_up <= 3_000 + (T.MAX_GAP + 3) * STEPS + 2


def test_a_try_that_is_much_worse_ends_after_one_timed_step():
    def cost(step, threads):
        return {1: 1e-4, 2: 100e-4}[threads]  # as if another process had both cores

    m = Machine(cost).run(3_000)
    assert m.gov.threads == 1
    runs, current = [], 0  # lengths of the stretches at two threads after the start
    for n in m.threads_log[STEPS * 3 :]:
        if n == 2:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert runs and max(runs) <= 2  # one warm-up step and one timed step


def test_levels_halve_down_to_one_and_never_exceed_the_ceiling():
    m = Machine(alone, wide=6)
    assert m.gov.levels == [1, 3, 6] and m.now == 6


def test_four_threads_share_two_ways():
    def cost(step, threads):  # another job on half the cores: 2 threads is best
        return {1: 2e-4, 2: 1.1e-4, 4: 40e-4}[threads]

    m = Machine(cost, wide=4).run(5_000)
    assert m.gov.threads == 2


def _blas_threads():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_fit_gives_the_user_their_thread_count_back():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 20)).astype(np.float32)
    y = rng.integers(0, 3, 600)
    model = vn.Sequential([L.Dense(20, 16), L.ReLU(), L.Dense(16, 3)])
    model.fit(X[:32], y[:32], verbose=0)  # loads what fit loads (numba brings SciPy's BLAS)
    before = _blas_threads()
    h = model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert _blas_threads() == before and isinstance(h.thread_changes, list)
    with threadpool_limits(1, user_api="blas"):  # the user's limit is the ceiling
        model.fit(X, y, epochs=1, batch_size=16, verbose=0)
        assert set(_blas_threads().values()) == {1}
    assert _blas_threads() == before


def test_fit_restores_threads_when_training_fails(monkeypatch):
    if max(_blas_threads().values(), default=1) < 2:
        pytest.skip("one BLAS thread here: nothing to govern")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 8)).astype(np.float32)
    y = rng.integers(0, 2, 256)
    model = vn.Sequential([L.Dense(8, 2)])
    model.fit(X[:32], y[:32], verbose=0)
    before = _blas_threads()
    seen = []

    class Down(T.Governor):  # as if it had found a busy machine at once
        def tick(self, m):
            self._set_threads(1)

    class Boom(vn.callbacks.Callback):
        def on_batch_end(self, step, logs=None):
            if step == 2:
                seen.append(_blas_threads())
                raise KeyboardInterrupt

    monkeypatch.setattr(T, "Governor", Down)
    monkeypatch.setattr(T, "_governors", {})
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=32, verbose=0, callbacks=[Boom()])
    assert set(seen[0].values()) == {1}  # it did change them
    assert _blas_threads() == before  # and put them back


def test_the_governor_carries_over_to_the_next_fit():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    model = vn.Sequential([L.Dense(8, 2)])
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    if not T._governors:
        pytest.skip("one BLAS thread here: nothing to govern")
    (gov,) = T._governors.values()
    steps = gov._steps
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert T._governors == {gov.levels[-1]: gov} and gov._steps == steps + 8
