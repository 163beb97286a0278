"""``python -m testkit.akua_double``: the double as a process.

Prints its API URL as the first line of stdout (so a parent can wait for it
by reading one line) and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .server import AkuaDouble


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.akua_double")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", required=True)
    parser.add_argument("--write-rate", type=float, default=None, help="POSTs per second")
    parser.add_argument("--write-burst", type=float, default=None)
    parser.add_argument("--retry-after", choices=["seconds", "date", "none"], default="seconds")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--unique-names", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--required-workspace", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--state-file", default=None, help="keep packages across restarts")
    args = parser.parse_args(argv)
    try:
        double = AkuaDouble(
            token=args.token,
            host=args.host,
            port=args.port,
            write_rate_limit=args.write_rate,
            write_burst=args.write_burst,
            retry_after=None if args.retry_after == "none" else args.retry_after,
            latency_s=args.latency,
            unique_names=args.unique_names,
            required_workspace=args.required_workspace,
            seed=args.seed,
            state_file=args.state_file,
        )
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with double:
        print(double.url, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
