"""BLAS threads that adapt to a shared machine.

Alone, vecnn trains fastest with one BLAS thread per core. Beside another busy process on the
same cores, multi-threaded BLAS collapses: OpenBLAS's threads meet at the end of every matrix
product (and of every pass vecnn hands them, ``vecnn.pool``), so when one of them is waiting
for a core, the product waits for the scheduler to give it one: a time slice of milliseconds
for work of microseconds. Two trainings on two cores each ran 10 to 25 times slower than
alone; with one thread each they keep about half of their solo speed.

No fixed rule finds the right count (the other process may be anything, and may stop), so
``Governor`` measures: it times the training steps in windows of about ``WINDOW_SECONDS``
(long enough to average over the scheduler's time slices), per sample, and now and then
tries the next thread count down (and, once down, the next one up) for one window. It moves
when the other count is clearly faster: down only when that saves more than ``SWITCH_DOWN``
(alone, fewer threads are a little slower, and noise must not look like contention), up when
it is ``SWITCH_UP`` faster, and it tries at once, rather than at the next scheduled try, when
a window at the current count is ``DEGRADED`` times slower than the one before. Tries back
off exponentially while they confirm the current count, so alone it costs about one window
in a hundred; a try that is obviously worse ends after its first timed step.

Thread counts only change the order of the sums inside the BLAS (results agree to rounding);
vecnn's own kernels give the same bits on any count (``vecnn.pool``).
"""

from __future__ import annotations

import time

#: a window: at least this long and at least this many steps, timed together at one count
WINDOW_SECONDS, WINDOW_STEPS = 0.05, 4
#: windows between tries of another count: at first, and at most (doubling while confirmed);
#: tries up start further apart (contention tends to last, and a try up hurts the other process)
MIN_GAP, MIN_GAP_UP, MAX_GAP = 4, 16, 128
#: a lower count must be this much faster to be chosen, a higher one this much
SWITCH_DOWN, SWITCH_UP = 1.5, 1.1
#: a window this much slower than the previous one at the same count triggers a try at once
DEGRADED = 2.0
#: a try whose time per sample is this much worse than the current count's ends early
ABANDON = 3.0


def _blas_controllers():
    """threadpoolctl's controllers of the BLAS libraries loaded in this process now (~1 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


class BlasThreads:
    """Sets the thread count of every BLAS library in the process; ``restore`` puts back the
    counts found at construction (the user's own limit is the ceiling: never exceeded)."""

    def __init__(self):
        self._libs = list(_blas_controllers())
        self._original = [lib.get_num_threads() for lib in self._libs]
        self.ceiling = max(1, min(self._original, default=1))

    def set(self, n: int) -> None:
        for lib in self._libs:
            lib.set_num_threads(n)

    def restore(self) -> None:
        for lib, n in zip(self._libs, self._original):
            lib.set_num_threads(n)


class BlasLimit(BlasThreads):
    """BLAS limited to ``n`` threads (never above the count already in force) until
    ``restore``: a distributed fit's share of the node's cores (``vecnn.distributed``)."""

    def __init__(self, n: int):
        try:
            super().__init__()
        except Exception:  # threadpoolctl cannot inspect this process: leave threads alone
            self._libs, self._original, self.ceiling = [], [], 1
            return
        self.set(max(1, min(int(n), self.ceiling)))


class Governor:
    """Chooses the BLAS thread count of a training loop by timing it (see the module docs).

    Call ``tick(m)`` after every step of ``m`` samples and ``pause()`` before work that is not a
    training step (validation, callbacks), so that it is not timed. ``set_threads(n)`` applies a
    count; ``wide`` is the most threads to use. ``clock`` is injectable for tests.
    """

    def __init__(self, set_threads, wide: int, clock=time.perf_counter):
        self._set_threads = set_threads
        self._clock = clock
        levels, n = [], max(1, int(wide))
        while True:
            levels.append(n)
            if n == 1:
                break
            n = max(1, n // 2)
        self.levels = levels[::-1]  # ascending: 1, ..., wide
        self.choice = len(self.levels) - 1  # index of the chosen count: all threads
        self.cost: dict[int, float] = {}  # level index -> seconds per sample, last window
        self.history: list[tuple[int, int]] = []  # (step, thread count) at every change of choice
        self._gap = {-1: MIN_GAP, 1: MIN_GAP_UP}  # windows to the next try down / up
        self._countdown = 1  # the first try comes after one window
        self._trying = None  # level index being tried, or None
        self._direction = -1  # the next try goes down (-1) or up (+1)
        self._last_move = 0  # the last change of choice: down (-1) or up (+1)
        self._steps = 0
        self._reset_window()
        self._running = self.choice
        self._set_threads(self.levels[self.choice])
        self.pause()

    def attach(self, set_threads) -> None:
        """Continue with another setter (the next ``fit``): apply the count in force."""
        self._set_threads = set_threads
        self._set_threads(self.levels[self._running])
        self.pause()

    @property
    def threads(self) -> int:
        """The thread count chosen now."""
        return self.levels[self.choice]

    def pause(self) -> None:
        """The time until the next ``tick`` is not a training step's: don't count it."""
        self._last = None

    def _reset_window(self):
        self._t = 0.0
        self._n = 0
        self._k = 0

    def _run(self, level: int):
        if level != self._running:
            self._set_threads(self.levels[level])
            self._running = level
            self._last = None  # the first step after a change warms up
        self._reset_window()

    def tick(self, m: int) -> None:
        now = self._clock()
        last, self._last = self._last, now
        self._steps += 1
        if last is None:
            return
        self._t += now - last
        self._n += m
        self._k += 1
        full = self._k >= WINDOW_STEPS and self._t >= WINDOW_SECONDS
        if self._trying is not None:
            mine = self.cost.get(self.choice)
            if full or (mine is not None and self._t > ABANDON * mine * self._n):
                self._end_try()
        elif full:
            self._end_window()

    def _end_window(self):
        cost = self._t / self._n
        before = self.cost.get(self.choice)
        self.cost[self.choice] = cost
        self._reset_window()
        if before is not None and cost > DEGRADED * before:
            self._gap[-1] = MIN_GAP
            self._countdown = 0
        else:
            self._countdown -= 1
        if self._countdown <= 0:
            self._start_try()

    def _start_try(self):
        for d in (self._direction, -self._direction):
            level = self.choice + d
            if 0 <= level < len(self.levels):
                self._trying = level
                self._run(level)
                return
        self._countdown = MAX_GAP  # one count only: nothing to try

    def _end_try(self):
        tried, self._trying = self._trying, None
        self.cost[tried] = self._t / max(self._n, 1)
        mine, theirs = self.cost[self.choice], self.cost[tried]
        d = -1 if tried < self.choice else 1
        if theirs * (SWITCH_DOWN if d < 0 else SWITCH_UP) < mine:
            if d < 0 and self._last_move > 0:
                # down again after going up: the count up was not worth it after all
                self._gap[1] = min(2 * self._gap[1], MAX_GAP)
            self.choice, self._last_move = tried, d
            self.history.append((self._steps, self.levels[tried]))
            self._gap[-1] = MIN_GAP
        else:
            self._gap[d] = min(2 * self._gap[d], MAX_GAP)
        # the next try: the other way where both ways exist, else the only way
        if 0 < self.choice < len(self.levels) - 1:
            self._direction = -d
        else:
            self._direction = -1 if self.choice > 0 else 1
        self._countdown = self._gap[self._direction]
        self._run(self.choice)


#: one governor per thread ceiling, kept across ``fit`` calls: what it learnt about the machine
#: (and how long its tries have backed off) carries over to the next fit of the process, as
#: Keras-style loops of ``fit(epochs=1)`` and grid searches call it again and again
_governors: dict[int, Governor] = {}


def governor():
    """A ``(Governor, BlasThreads)`` for a training loop, or ``(None, None)`` when there is
    nothing to choose (one BLAS thread, or no BLAS threadpoolctl can control)."""
    try:
        blas = BlasThreads()
    except Exception:  # threadpoolctl cannot inspect this process: leave threads alone
        return None, None
    if blas.ceiling <= 1 or not blas._libs:
        return None, None
    gov = _governors.get(blas.ceiling)
    if gov is None:
        gov = _governors[blas.ceiling] = Governor(blas.set, blas.ceiling)
    else:
        gov.attach(blas.set)
    return gov, blas
