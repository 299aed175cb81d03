"""engine.runs.memo.LruMemo: one make per key even when asked at once; the last `size` kept."""

from __future__ import annotations

import threading
import time

from engine.runs.memo import LruMemo


def test_callers_of_one_key_wait_for_one_make_and_other_keys_do_not_wait() -> None:
    memo: LruMemo[int] = LruMemo(2)
    made, gate = [], threading.Event()

    def slow(value: int):
        def make() -> int:
            made.append(value)
            gate.wait(5)
            return value
        return make

    results = []
    threads = [threading.Thread(target=lambda: results.append(memo.get("a", slow(1)))) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert memo.get("b", lambda: 2) == 2  # not held up by the slow make of "a"
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [1, 1, 1] and made == [1]


def test_the_least_recently_used_key_goes_first() -> None:
    memo: LruMemo[str] = LruMemo(2)
    calls = []

    def make(key: str):
        return lambda: calls.append(key) or key.upper()

    memo.get("a", make("a"))
    memo.get("b", make("b"))
    memo.get("a", make("a"))  # a is now the most recent
    memo.get("c", make("c"))  # evicts b
    assert len(memo) == 2
    memo.get("a", make("a"))
    memo.get("b", make("b"))
    assert calls == ["a", "b", "c", "b"]
    memo.size = 1
    memo.get("d", make("d"))
    assert len(memo) == 1
