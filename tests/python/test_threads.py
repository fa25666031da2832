"""Heavy work releases the GIL, and copies of a Restorer share one set of weights."""
import copy
import gc
import threading
import time

import numpy as np

import spire
from conftest import FIX, picture

RUN = dict(num_inference_steps=6)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_two_threads_overlap_in_time(restorer):
    img = picture(64, 64)
    restorer.restore(img, **RUN)  # warm-up
    spans = []

    def work():
        t0 = time.perf_counter()
        restorer.restore(img, **RUN)
        spans.append((t0, time.perf_counter()))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a0, a1), (b0, b1) = sorted(spans)
    overlap = max(0.0, min(a1, b1) - max(a0, b0)) / min(a1 - a0, b1 - b0)
    print(f"overlap ratio {overlap:.2f}")
    assert overlap > 0.5, f"restores overlapped for only {overlap:.0%} of the shorter one"


def test_python_threads_run_while_restoring(restorer):
    """A pure-Python counter keeps counting while restore runs (it could not with the GIL held)."""
    img = picture(64, 64)
    stop = threading.Event()
    count = [0]

    def spin():
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t0 = time.perf_counter()
    t.start()
    time.sleep(0.2)
    base = count[0] / (time.perf_counter() - t0)
    c0, t1 = count[0], time.perf_counter()
    restorer.restore(img, **RUN)
    during = (count[0] - c0) / (time.perf_counter() - t1)
    stop.set()
    t.join()
    ratio = during / base
    print(f"counter rate during restore / before: {ratio:.2f}")
    assert ratio > 0.2, f"Python thread starved during restore (rate ratio {ratio:.2f})"


def test_copies_share_weights_and_memory():
    gc.collect()
    r0 = _rss_mib()
    a = spire.Restorer.from_pretrained(FIX / "tiny-sd1", adaptor=FIX / "tiny-spire-adaptor")
    r1 = _rss_mib()
    copies = [copy.copy(a) for _ in range(20)] + [copy.deepcopy(a) for _ in range(20)]
    r2 = _rss_mib()
    results = []
    t = threading.Thread(target=lambda: results.append(copies[0].restore(picture(), num_inference_steps=1)))
    t.start()
    t.join()
    assert all(c.shares_weights_with(a) for c in copies)
    b = spire.Restorer.from_pretrained(FIX / "tiny-sd1", adaptor=FIX / "tiny-spire-adaptor")
    r3 = _rss_mib()
    assert not b.shares_weights_with(a)
    load, copy_cost, second = r1 - r0, r2 - r1, r3 - r2
    print(f"RSS: first load +{load:.1f} MiB, 40 copies +{copy_cost:.2f} MiB, second load +{second:.1f} MiB")
    assert copy_cost < 0.5, f"40 copies grew RSS by {copy_cost:.2f} MiB"
    assert results and results[0].shape == picture().shape
