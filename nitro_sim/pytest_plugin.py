"""pytest fixtures for the attested stack, real processes and all (entry point ``pytest11``: ``nitro_sim``).

Fixtures (each test sees them as function-scoped; the processes behind them live as long as
``--nitro-sim-scope=function|module|session`` says, default ``session``, or the ``nitro_sim_scope`` ini key):

- ``nitro_home``: the temporary ``NITRO_SIM_HOME`` (a short path under ``/tmp``; removed afterwards);
- ``kms_sim``: :class:`nitro_sim.stack.KmsSim` (``.url``, ``.credentials``, ``.boto3_client()``,
  ``.set_policy(dict)``, ``.audit()``, ``.inject_fault(name, count)``, ``.reset_keys()``,
  ``.reset_key_stores()``);
- ``vsock_proxy``: :class:`nitro_sim.stack.VsockProxy`, the parent's vsock port 8000 to that kms-sim;
- ``nsm``: :class:`nitro_sim.stack.Nsm` with the PCRs of the test's markers, its environment
  (``NITRO_SIM_HOME``, ``NITRO_SIM_NSM``, ``NITRO_SIM_CID``, and ``NITRO_SIM_KMS_TLS=0``) set in
  ``os.environ`` for the test, so the test process is that simulated enclave's app;
- ``enclave_kms``: the SDK's KMS client over all of them: ``enclave_kms.generate_random(NumberOfBytes=32)``;
- ``built_enclave``: a factory, ``built_enclave(docker_dir, docker_uri=...)``, over ``nitro-cli
  build-enclave``: an :class:`nitro_sim.enclaves.Image` (``.eif``, ``.measurements``, ``.pcr0``). Each
  directory is built once per session and content (:class:`nitro_sim.enclaves.ImageCache`: a digest of
  the files the build may read); the image file is shared, so a test must not change it;
- ``running_enclave``: a factory, ``running_enclave(image_or_eif, cpu_count=2, memory_mib=512, cid=None,
  debug=False, name=None)``, over ``nitro-cli run-enclave`` in the stack's home, beside ``kms_sim`` and
  ``vsock_proxy`` (which it starts): an :class:`nitro_sim.enclaves.Enclave` (``.enclave_id``, ``.cid``,
  ``.measurements`` from ``describe-enclaves``, ``.eif``, ``.info``). ``NITRO_SIM_HOME`` names the home in
  ``os.environ`` for the test, so the test process is the parent instance (``host.random_client.fetch``
  finds the enclave's vsock sockets). At the end of the test, ``nitro-cli terminate-enclave`` stops each
  enclave it started; until then each one's supervisor is under the safety net.

Markers: ``@pytest.mark.nitro_pcr(index, "hex")`` (repeatable; the closest one wins for an index) and
``@pytest.mark.nitro_debug``, registered here so ``--strict-markers`` runs accept them.

Between tests, under a wider scope, each fixture resets what a test may have changed: kms-sim's policy goes
back to the first one, injected faults are cleared, its KMS keys and aliases go back to those there were
when it started (none: a key or alias a test made is gone, so the next test can make ``alias/app`` again
and ListKeys sees only its own keys; one transaction, and none when no test changed a key), so do its
custom key stores (the next test can create a key store of the same name again; likewise one transaction,
and none when no test changed one), the audit mark moves to the end (``audit()`` returns the test's own
records); an NSM is chosen per (PCRs, debug) from a pool, and restarted if a test extended or locked one
of its PCRs 16-31. A process that fails to start fails
the test with its name and the last lines of its output. Processes are stopped when their scope ends, and
by the safety net of :mod:`nitro_sim.procs` on Ctrl-C, SIGTERM or a killed runner.

What a scope's start and end cost (bench scenario 7): kms-sim, vsock-proxy and nsm-sim are forked by one
zygote per session (:mod:`nitro_sim._zygote`: their code imported once, a few milliseconds a start; Linux),
each still a process of its own in the scope's fresh home. At the end of a scope its processes get SIGTERM
and are handed to one reaper thread per session (:mod:`nitro_sim._reaper`), which reaps them and then
removes the home while the next test runs; the session's end waits for all of it, then stops the zygote.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from nitro_sim._scope import BOOT_LOCKED_PCRS, PCR_BYTES, ClientMaker, Runtime, Stack
from nitro_sim.procs import ProcessError

if TYPE_CHECKING:  # the stack (kms, attestation, cryptography) is imported when a fixture first needs it
    from nitro_sim.enclaves import Enclave, Image, ImageCache
    from nitro_sim.stack import KmsSim, Nsm, VsockProxy

SCOPES = ("function", "module", "session")
DEFAULT_SCOPE = "session"
#: A home under this many bytes keeps ``<home>/vsock/<cid>/<port>.sock`` far below the 107-byte limit.
MAX_HOME_PATH_BYTES = 48

#: attestation.sim.ENV_HOME (not imported: the plugin loads in every pytest run, attestation is heavier).
ENV_HOME = "NITRO_SIM_HOME"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nitro-sim", "nitro-sim: the simulated attested stack")
    group.addoption(
        "--nitro-sim-scope",
        choices=SCOPES,
        default=None,
        help=f"how long the stack's processes live (default: ini nitro_sim_scope, else {DEFAULT_SCOPE})",
    )
    parser.addini("nitro_sim_scope", f"default --nitro-sim-scope ({DEFAULT_SCOPE})", default=DEFAULT_SCOPE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "nitro_pcr(index, hex): the simulated enclave's boot PCR <index> (0-15), 48 bytes in hex"
    )
    config.addinivalue_line("markers", "nitro_debug: the simulated enclave runs in debug mode (PCR0-2 zero)")
    scope = _scope("", config)
    if scope not in SCOPES:
        raise pytest.UsageError(f"nitro_sim_scope must be one of {', '.join(SCOPES)}, got {scope!r}")


def _scope(fixture_name: str, config: pytest.Config) -> Any:
    """The scope of the process-owning fixtures (pytest calls this once per fixture)."""
    chosen = config.getoption("nitro_sim_scope", default=None)
    return chosen or config.getini("nitro_sim_scope") or DEFAULT_SCOPE


def _short_home() -> Path:
    """A fresh directory whose path is short enough for the Unix sockets under it."""
    base = tempfile.gettempdir()
    if len(base.encode()) + 20 > MAX_HOME_PATH_BYTES:
        base = "/tmp"  # noqa: S108 - a private mkdtemp directory, for its short path
    return Path(tempfile.mkdtemp(prefix="nitro-sim-", dir=base))


def _fail(error: ProcessError) -> NoReturn:
    pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def _nitro_sim_runtime() -> Iterator[Runtime]:
    runtime = Runtime()
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture(scope=_scope)
def _nitro_sim_stack(_nitro_sim_runtime: Runtime) -> Iterator[Stack]:
    stack = Stack(_short_home(), _nitro_sim_runtime)
    try:
        yield stack
    finally:
        try:
            if stack.kms is not None:
                stack.kms.close()  # its keys.db and keystores.db connections, before the home goes
        finally:
            stack.close()


@pytest.fixture
def nitro_home(_nitro_sim_stack: Stack) -> Path:
    """The temporary NITRO_SIM_HOME the stack runs in."""
    return _nitro_sim_stack.home


@pytest.fixture
def kms_sim(_nitro_sim_stack: Stack) -> KmsSim:
    """A running kms-sim: the first policy, no faults, no key, alias or custom key store made by an earlier
    test, audit() empty at the start of the test."""
    try:
        kms = _nitro_sim_stack.kms_sim()
    except ProcessError as error:
        _fail(error)
    kms.reset()
    return kms


@pytest.fixture
def vsock_proxy(_nitro_sim_stack: Stack, kms_sim: KmsSim) -> VsockProxy:
    """The parent's vsock-proxy: vsock port 8000 to ``kms_sim``."""
    try:
        return _nitro_sim_stack.vsock_proxy()
    except ProcessError as error:
        _fail(error)


def _marked_pcrs(request: pytest.FixtureRequest) -> dict[int, bytes]:
    pcrs: dict[int, bytes] = {}
    for marker in request.node.iter_markers("nitro_pcr"):  # closest first
        if len(marker.args) != 2 or marker.kwargs:
            raise pytest.UsageError("use @pytest.mark.nitro_pcr(index, hex)")
        index, value = marker.args
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < BOOT_LOCKED_PCRS:
            raise pytest.UsageError(f"nitro_pcr: index must be 0..{BOOT_LOCKED_PCRS - 1}, got {index!r}")
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
        except (TypeError, ValueError):
            raise pytest.UsageError(f"nitro_pcr({index}): the value is not hexadecimal") from None
        if len(raw) != PCR_BYTES:
            raise pytest.UsageError(f"nitro_pcr({index}): the value must be {PCR_BYTES} bytes")
        pcrs.setdefault(index, raw)
    return pcrs


@pytest.fixture
def nsm(_nitro_sim_stack: Stack, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Nsm:
    """A simulated NSM with the PCRs of the test's markers; this process is its enclave's app."""
    debug = request.node.get_closest_marker("nitro_debug") is not None
    try:
        device = _nitro_sim_stack.nsm(_marked_pcrs(request), debug)
    except ProcessError as error:
        _fail(error)
    from nitro_sim.stack import ENV_KMS_TLS  # noqa: PLC0415 - see the imports

    for name, value in {**device.environ, ENV_KMS_TLS: "0"}.items():
        monkeypatch.setenv(name, value)
    return device


@pytest.fixture
def _nitro_prestart(_nitro_sim_stack: Stack, request: pytest.FixtureRequest) -> Iterator[ClientMaker]:
    """Start kms-sim and the test's NSM device together, and make the SDK client meanwhile (``enclave_kms``
    needs all three)."""
    debug = request.node.get_closest_marker("nitro_debug") is not None
    try:
        kms, device = _nitro_sim_stack.prestart(_marked_pcrs(request), debug)
    except ProcessError as error:
        _fail(error)
    maker = ClientMaker(kms, device)
    try:
        yield maker
    finally:
        maker.close()


@pytest.fixture
def enclave_kms(_nitro_prestart: ClientMaker, kms_sim: KmsSim, vsock_proxy: VsockProxy, nsm: Nsm) -> Any:
    """The enclave SDK's KMS client through ``vsock_proxy`` to ``kms_sim``, attested by ``nsm``."""
    from nitro_sim.stack import PROXY_PORT  # noqa: PLC0415 - see the imports

    if _nitro_prestart.device is not nsm or vsock_proxy.port != PROXY_PORT:
        raise RuntimeError("enclave_kms: the client was made for another NSM device or proxy port")
    return _nitro_prestart.client()


@pytest.fixture(scope="session")
def _nitro_sim_images() -> Iterator[ImageCache]:
    """The session's enclave images, one per Dockerfile directory content, in a directory of their own."""
    from nitro_sim.enclaves import ImageCache  # noqa: PLC0415 - see the imports
    from nitro_sim.stack import child_environment  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="nitro-sim-images-"))
    try:
        yield ImageCache(directory / "eif", env=child_environment(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def built_enclave(_nitro_sim_images: ImageCache) -> Callable[..., Image]:
    """``built_enclave(docker_dir, docker_uri=...)``: ``nitro-cli build-enclave`` of that directory."""

    def build(docker_dir: str | os.PathLike[str], **options: Any) -> Image:
        try:
            return _nitro_sim_images.build(Path(docker_dir), **options)
        except ProcessError as error:
            _fail(error)
        except ValueError as error:
            pytest.fail(f"built_enclave: {error}", pytrace=False)

    return build


@pytest.fixture
def running_enclave(
    _nitro_sim_stack: Stack, vsock_proxy: VsockProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Enclave]]:
    """``running_enclave(image_or_eif, ...)``: ``nitro-cli run-enclave`` beside kms_sim and vsock_proxy;
    each enclave started is terminated at the end of the test."""
    from nitro_sim.enclaves import Image  # noqa: PLC0415 - see the imports

    monkeypatch.setenv(ENV_HOME, str(_nitro_sim_stack.home))
    started: list[Enclave] = []

    def run(image: Image | str | os.PathLike[str], **options: Any) -> Enclave:
        eif = image.eif if isinstance(image, Image) else Path(image)
        try:
            enclave = _nitro_sim_stack.run_enclave(eif, **options)
        except ProcessError as error:
            _fail(error)
        started.append(enclave)
        return enclave

    try:
        yield run
    finally:
        for enclave in reversed(started):
            _nitro_sim_stack.terminate(enclave)
