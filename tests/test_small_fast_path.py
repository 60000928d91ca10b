"""The small-object fast path (`transfer.small`): what it finishes, what it hands back, and that
it stops taking objects after failures in a row (the ordinary path then owns the problem)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from microns_get.errors import RemoteError
from microns_get.plan.model import PlanItem, RemoteCopy
from microns_get.transfer.small import FAILURES_IN_A_ROW, SmallJob, SmallObjects


def job(i: int) -> SmallJob:
    url = f"s3://bucket/k/{i}"
    copy = RemoteCopy(url=url, provider="s3", size=10, etag="e")
    item = PlanItem(path=f"k/{i}", size=10, copies=(copy,))
    return SmallJob(item, copy, f"k/{i}", f"http://h/k/{i}", None, Path(f"/nowhere/k/{i}"))


class FakeReader:
    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def get_bytes(self, url: str, headers: Any, size: int) -> bytearray:
        with self.lock:
            self.asked.append(url)
        if int(url.rsplit("/", 1)[1]) in self.failing:
            raise RemoteError(f"HTTP 503 from {url}", status=503, retryable=True)
        return bytearray(size)


def run(jobs: list[SmallJob], reader: FakeReader, threads: int = 1):
    done: list[tuple[str, str]] = []
    loop_thread: list[int] = []

    def on_done(j: SmallJob, method: str, detail: str) -> None:
        loop_thread.append(threading.get_ident())
        done.append((j.item.path, method))

    async def main():
        fast = SmallObjects(reader, threads, lambda j, data: ("md5", ""), on_done)  # type: ignore[arg-type]
        return await fast.run(jobs), threading.get_ident()

    handed_back, loop_ident = asyncio.run(main())
    assert set(loop_thread) <= {loop_ident}  # results are delivered on the event loop
    return done, handed_back


def test_everything_done_when_nothing_fails() -> None:
    jobs = [job(i) for i in range(200)]
    done, handed_back = run(jobs, FakeReader(set()), threads=4)
    assert sorted(p for p, _ in done) == sorted(j.item.path for j in jobs)
    assert handed_back == []


def test_a_failure_hands_that_object_back_with_its_error() -> None:
    done, handed_back = run([job(i) for i in range(10)], FakeReader({3}))
    assert [j.item.path for j, _ in handed_back] == ["k/3"]
    assert "503" in handed_back[0][1]
    assert len(done) == 9


def test_failures_in_a_row_stop_the_fast_path_and_hand_back_the_rest() -> None:
    reader = FakeReader(set(range(FAILURES_IN_A_ROW)))
    done, handed_back = run([job(i) for i in range(50)], reader)
    assert done == []
    assert len(handed_back) == 50  # the failed ones with their error, the untaken with ""
    assert [e != "" for _, e in handed_back].count(True) == FAILURES_IN_A_ROW
    assert len(reader.asked) == FAILURES_IN_A_ROW  # nothing more was requested


def test_a_plan_of_many_items_has_a_short_repr() -> None:
    """asyncio.run formats its task's result (the plan) on the way out, on Python 3.11: a repr of
    every item cost ~25 ms per 10,000 items and grows with a mirror's millions."""
    from microns_get.plan.model import Plan

    items = tuple(job(i).item for i in range(10_000))
    text = repr(Plan({}, items, 8 << 20, "s3://b/p/"))
    assert text == "Plan(10000 items, 100000 bytes from s3://b/p/)"
