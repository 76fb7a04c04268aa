"""The peer of scenario 2 in its own process: moto's ThreadedMotoServer on 127.0.0.1.

``python -m bench.moto_peer [--port P]`` prints the bound URL as its first line (like ``kms-sim serve``)
and serves until SIGTERM. werkzeug's per-request access log is silenced (deps-and-costs §2.6), so moto is
measured without the cost of logging every request to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moto_peer")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"http://{host}:{port}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
