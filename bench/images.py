"""Scenario 6: enclave images. ``nitro-cli build-enclave`` of the demo image and ``run-enclave`` to the app's
first answer, each next to the floor that bounds it, measured in the same run.

- build: the ``nitro-cli build-enclave`` process on ``Dockerfile.enclave`` (seconds, EIF size). Floors: the
  work no build can skip, in-process: reading the context's files, archiving them (cpio) and hashing the
  image (the PCRs' SHA-384 and the CRC), i.e. :func:`host.nitro_cli._images.build_image`; and the start of
  one Python interpreter that imports the build code (what any Python CLI pays before its first byte).
- run: from ``nitro-cli run-enclave`` to the provider app answering its first attested request through
  ``vsock-proxy`` and ``kms-sim`` (milliseconds), with the ``run-enclave`` command's own share. Floors: one
  attested request to an app already running (the same path, warm); that plus the four interpreter starts
  that must happen one after another first (nitro-cli, the enclave's supervisor, its nsm-sim, the app); and,
  in-process, reading, checking and measuring the EIF and unpacking its application ramdisk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Pinning, Settings, Summary, summarize
from bench.model import Ratio, Row, ScenarioResult
from bench.stack import start_kms, start_proxy
from nitro_sim.enclaves import copy_build_context
from nitro_sim.procs import ProcessGroup
from nitro_sim.procs import run as run_command
from nitro_sim.stack import program

TITLE = "Enclave images: build-enclave and run-enclave to the first answer, against their floors"
REPO = Path(__file__).resolve().parents[1]
ENCLAVE_CID = 16
#: Programs started one after another before a new enclave answers: nitro-cli, supervisor, nsm-sim, the app.
STARTS_ON_CRITICAL_PATH = 4
#: How long one nitro-cli command may take before the scenario gives up on it.
COMMAND_TIMEOUT_S = 120.0


def _nitro_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One nitro-cli command through nitro_sim.procs.run (a failure: ProcessError with its last lines)."""
    argv = [*program("nitro-cli"), *args]
    return run_command(argv, name=f"nitro-cli {args[0]}", env=_env(home), timeout=COMMAND_TIMEOUT_S)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NITRO_", "AWS_", "SOURCE_DATE"))}
    env["NITRO_SIM_HOME"] = str(home)
    return env


def _allow_pcr0(home: Path, pcr0: str) -> Path:
    statement = {
        "Effect": "Allow",
        "Action": "kms:GenerateRandom",
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0}},
    }
    path = home / "kms" / "policy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"nitro-sim": {"Version": "2012-10-17", "Statement": [statement]}}))
    return path


def run(
    settings: Settings, pinning: Pinning, home: Path, procs: ProcessGroup, result: ScenarioResult
) -> None:
    from attestation.cpio import read_newc
    from attestation.eif import read_eif
    from host.nitro_cli._blobs import load_blobs
    from host.nitro_cli._images import build_image

    rounds = max(1, settings.rounds if not settings.quick else 1)
    context = copy_build_context(REPO, home / "ctx")
    eif = home / "provider.eif"
    build_s: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        done = _nitro_cli(
            home,
            "build-enclave",
            "--docker-dir",
            str(context),
            "--docker-uri",
            "demo:1",
            "--output-file",
            str(eif),
        )
        build_s.append(time.perf_counter() - start)
    pcr0 = json.loads(done.stdout)["Measurements"]["PCR0"]
    size = eif.stat().st_size

    args = argparse.Namespace(
        docker_uri="demo:1",
        docker_dir=str(context),
        output_file=str(eif),
        signing_certificate=None,
        private_key=None,
        name=None,
        image_version=None,
        metadata=None,
    )
    blobs = load_blobs({})
    floor_s: list[float] = []
    for _ in range(max(rounds, 5)):
        start = time.perf_counter()
        build_image(args, blobs)
        floor_s.append(time.perf_counter() - start)
    interpreter_s: list[float] = []
    for _ in range(rounds):  # started as the nitro-cli commands are (nitro_sim.procs.run), so alike
        start = time.perf_counter()
        run_command([sys.executable, "-c", "import host.nitro_cli._images"], name="python -c import")
        interpreter_s.append(time.perf_counter() - start)

    build, floor, interp = summarize(build_s), summarize(floor_s), summarize(interpreter_s)
    result.rows += [
        Row(case=f"nitro-cli build-enclave (EIF {size / 1024:.0f} KiB)", unit="ms", value=_ms(build)),
        Row(case="floor: read + archive + hash the same image in-process", unit="ms", value=_ms(floor)),
        Row(case="floor: start Python and import the build code", unit="ms", value=_ms(interp)),
    ]
    result.ratios.append(
        Ratio(
            name="build-enclave / (interpreter start + in-process build)",
            value=build.median / (floor.median + interp.median),
            detail=f"{build.median * 1e3:.0f} ms against "
            f"{floor.median * 1e3:.0f} + {interp.median * 1e3:.0f} ms",
        )
    )
    result.data["eif_bytes"] = size

    _allow_pcr0(home, pcr0)
    kms = start_kms(procs, pinning, home, cpu=None)
    start_proxy(procs, pinning, home, cpu=None, target_port=kms.port)
    saved = os.environ.get("NITRO_SIM_HOME")
    os.environ["NITRO_SIM_HOME"] = str(home)  # the client finds the enclave's vsock socket under the home
    try:
        _run_rounds(home, eif, pcr0, rounds, result, interpreter=interp)
    finally:
        if saved is None:
            del os.environ["NITRO_SIM_HOME"]
        else:
            os.environ["NITRO_SIM_HOME"] = saved

    data = eif.read_bytes()
    unpack_s: list[float] = []
    for _ in range(max(rounds, 5)):
        start = time.perf_counter()
        read_newc(read_eif(data).ramdisks[1])
        unpack_s.append(time.perf_counter() - start)
    result.rows.append(
        Row(
            case="floor: read, check and measure the EIF, unpack its app in-process",
            unit="ms",
            value=_ms(summarize(unpack_s)),
        )
    )


def _run_rounds(
    home: Path, eif: Path, pcr0: str, rounds: int, result: ScenarioResult, *, interpreter: Summary
) -> None:
    from cryptography import x509

    from attestation.verify import Verifier
    from host.random_client import fetch

    root = x509.load_pem_x509_certificate((home / "pki" / "root.crt").read_bytes())
    verifier = Verifier(roots=[root], chain_cache=False)
    to_answer: list[float] = []
    command: list[float] = []
    warm: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        _nitro_cli(
            home,
            "run-enclave",
            "--eif-path",
            str(eif),
            "--cpu-count",
            "2",
            "--memory",
            "512",
            "--enclave-cid",
            str(ENCLAVE_CID),
        )
        command.append(time.perf_counter() - start)
        try:
            fetch(
                ENCLAVE_CID,
                5005,
                number_of_bytes=32,
                pcr0=bytes.fromhex(pcr0),
                verifier=verifier,
                at=datetime.now(UTC),
                wait=30.0,
                simulated=True,
            )
            to_answer.append(time.perf_counter() - start)
            for _ in range(5):
                begin = time.perf_counter()
                fetch(
                    ENCLAVE_CID,
                    5005,
                    number_of_bytes=32,
                    pcr0=bytes.fromhex(pcr0),
                    verifier=verifier,
                    at=datetime.now(UTC),
                    simulated=True,
                )
                warm.append(time.perf_counter() - begin)
        finally:
            _nitro_cli(home, "terminate-enclave", "--all")
    first, cmd, hot = summarize(to_answer), summarize(command), summarize(warm)
    result.rows += [
        Row(case="run-enclave to the app's first attested answer", unit="ms", value=_ms(first)),
        Row(case="  of which the run-enclave command", unit="ms", value=_ms(cmd)),
        Row(case="floor: one attested request to the running app (warm)", unit="ms", value=_ms(hot)),
    ]
    # The programs that must start one after another before the first answer: nitro-cli, the enclave's
    # supervisor, its nsm-sim and the app; each pays at least one interpreter start.
    path_s = STARTS_ON_CRITICAL_PATH * interpreter.median + hot.median
    result.rows.append(
        Row(
            case=f"floor: {STARTS_ON_CRITICAL_PATH} interpreter starts in sequence + one warm request",
            unit="ms",
            value=_ms(Summary(median=path_s, low=path_s, high=path_s, rounds=1)),
        )
    )
    result.ratios += [
        Ratio(
            name="run-enclave to first answer / one warm request",
            value=first.median / hot.median,
            detail=f"{first.median * 1e3:.0f} ms against {hot.median * 1e3:.1f} ms",
        ),
        Ratio(
            name="run-enclave to first answer / (interpreter starts on its path + one warm request)",
            value=first.median / path_s,
            detail=f"{first.median * 1e3:.0f} ms against {path_s * 1e3:.0f} ms",
        ),
    ]


def _ms(summary: Summary) -> Summary:
    """A summary of seconds, in milliseconds."""
    return Summary(
        median=summary.median * 1e3, low=summary.low * 1e3, high=summary.high * 1e3, rounds=summary.rounds
    )
