"""Attestation documents per request: fresh (prefetched in the background, used once) or reused."""

from __future__ import annotations

import threading

import pytest

from enclave import _documents
from enclave._documents import DocumentSource


class CountingNSM:
    def __init__(self) -> None:
        self.count = 0
        self.keys: list[bytes | None] = []
        self.gate = threading.Event()
        self.gate.set()

    def attestation(self, *, user_data=None, nonce=None, public_key=None) -> bytes:
        self.gate.wait(10)
        self.count += 1
        self.keys.append(public_key)
        return b"doc-%d" % self.count


def test_fresh_documents_are_each_used_once() -> None:
    nsm = CountingNSM()
    source = DocumentSource(lambda: nsm, b"KEY", prefetch=True)
    try:
        seen = []
        for _ in range(5):
            seen.append(source.take())
            source.prefetch_next()
        assert len(set(seen)) == 5
        assert set(nsm.keys) == {b"KEY"}
    finally:
        source.close()


def test_stale_prefetch_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    nsm = CountingNSM()
    source = DocumentSource(lambda: nsm, b"KEY", prefetch=True)
    try:
        assert source.take() == b"doc-1"
        source.prefetch_next()  # first call: no prefetch (one-shot clients never pay for one)
        assert source.take() == b"doc-2"
        source.prefetch_next()  # doc-3, made now
        monkeypatch.setattr(_documents, "PREFETCH_MAX_AGE_SECONDS", -1.0)
        assert source.take() == b"doc-4"  # doc-3 was too old by the time it was needed
        assert nsm.count == 4
    finally:
        source.close()


def test_failed_prefetch_falls_back_to_a_direct_call() -> None:
    calls = []

    class Flaky:
        def attestation(self, *, user_data=None, nonce=None, public_key=None) -> bytes:
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("device hiccup")
            return b"doc-%d" % len(calls)

    source = DocumentSource(Flaky, b"KEY", prefetch=True)
    try:
        assert source.take() == b"doc-1"
        source.prefetch_next()
        assert source.take() == b"doc-2"
        source.prefetch_next()  # this one fails in the background
        assert source.take() == b"doc-4"
    finally:
        source.close()


def test_one_shot_client_never_prefetches() -> None:
    nsm = CountingNSM()
    source = DocumentSource(lambda: nsm, b"KEY", prefetch=True)
    source.take()
    source.prefetch_next()
    source.close()
    assert nsm.count == 1


def test_reuse_window_and_no_prefetch() -> None:
    nsm = CountingNSM()
    source = DocumentSource(lambda: nsm, b"KEY", reuse_seconds=60)
    try:
        for _ in range(3):
            assert source.take() == b"doc-1"
            source.prefetch_next()
        assert nsm.count == 1
    finally:
        source.close()


def test_child_after_fork_does_not_wait_for_the_parents_worker() -> None:
    import os

    nsm = CountingNSM()
    source = DocumentSource(lambda: nsm, b"KEY", prefetch=True)
    try:
        source.take()
        source.take()
        nsm.gate.clear()  # the parent's prefetch will block in the NSM call
        source.prefetch_next()
        pid = os.fork()
        if pid == 0:  # child: the worker thread does not exist here
            nsm.gate.set()
            code = 0 if source.take().startswith(b"doc-") else 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        nsm.gate.set()
    finally:
        source.close()


def test_default_is_fresh_without_background_work() -> None:
    nsm = CountingNSM()
    source = DocumentSource(lambda: nsm, b"KEY")
    for _ in range(3):
        source.take()
        source.prefetch_next()
    assert nsm.count == 3
    assert source._prefetcher is None
    source.close()
