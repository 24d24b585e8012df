"""``stream-harness sweep`` (``make sweep``): capacity per transport under an SLO.

Runs Locust headless with the capacity search's load shape
(``loadtests/capacity_locustfile.py``): for each transport, doubling then
bisection of concurrent streams, each step decided with Wilson intervals on
the share of streams that miss the SLO (``analysis.capacity``).  Against the
embedded fake backend by default, or any backend with ``--host``.  Writes
``OUT/capacity.json`` (per transport: ``max_streams_meeting_slo``,
``lower_bound``, every step with its numbers and decision), ``OUT/capacity.png``
(each metric against concurrent streams, with the SLO lines), ``OUT/capacity.md``
(the same for people) and the sweep's raw data in ``OUT/run/``, then prints
one line per transport.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from fake_backend.process import BackendStartError, start_backend
from stream_harness.allocator import locust_env
from stream_harness.cli.errors import CommandError
from stream_harness.cli.run import new_run_id, point_latest
from stream_harness.paths import CAPACITY_LOCUSTFILE, LOCUSTFILE, PACKAGES_ROOT, RESULTS_ROOT

SUMMARY = "capacity per transport under an SLO: the most concurrent streams that meet it (doubling, then bisection)"
EXAMPLES = """\
  stream-harness sweep                                             # what `make sweep` does: the fake backend
  stream-harness sweep --transport ndjson --slo ttfc_p99_ms=500,gap_p99_ms=100 --out results/cap
  stream-harness sweep --host https://staging.example.com --transport both --max-streams 512 \\
      --out results/staging-capacity -- --auth-token "$JWT"
"""

#: The raw data of the sweep, inside --out.
RUN_DIR = "run"
CAPACITY_FILE = "capacity.json"
CAPACITY_MARKDOWN = "capacity.md"
#: Stream shape asked of the embedded fake backend: short streams, so steps see many of them.
FAKE_CHUNKS = 100
FAKE_STREAM_SECONDS = 2.0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="", help="backend base URL (default: start the embedded fake backend)")
    p.add_argument("--transport", choices=("ndjson", "socketio", "both"), default="both")
    p.add_argument(
        "--slo",
        default="",
        help="overrides of [tool.stream_harness.slo], e.g. ttfc_p99_ms=1000,gap_p99_ms=250,failure_rate=0.01",
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default results/sweep-<id>)")
    p.add_argument("--start", type=int, default=4, help="concurrent streams of the first step (default 4)")
    p.add_argument("--max-streams", type=int, default=256, help="the search's ceiling (default 256)")
    p.add_argument("--tolerance", type=float, default=0.1, help="bisection stops within this share (default 0.1)")
    p.add_argument("--step-seconds", type=float, default=8.0, help="least measuring time of a step that holds (8)")
    p.add_argument("--max-step-seconds", type=float, default=20.0, help="most measuring time of a step (20)")
    p.add_argument("--settle-seconds", type=float, default=1.0, help="after a step's users run, before counting (1)")
    p.add_argument("--min-streams", type=int, default=10, help="no step is decided on fewer streams (10)")
    p.add_argument("--chunks", type=int, default=None, help=f"chunks per stream (fake backend: {FAKE_CHUNKS})")
    p.add_argument(
        "--stream-seconds", type=float, default=None, help=f"stream length (fake backend: {FAKE_STREAM_SECONDS:g})"
    )
    p.add_argument("--endpoint", choices=("chat", "agent", "tool"), default="chat")
    p.add_argument("--backend-options", default="", help="extra fake-backend harness fields as JSON")
    p.add_argument("--backend-profile", default="", help="server-wide default profile for the embedded fake backend")
    p.add_argument("locust_args", nargs="*", help="extra Locust / harness arguments (after --)")


def check(args: argparse.Namespace) -> None:
    if args.start < 1 or args.max_streams < args.start:
        raise CommandError("need 1 <= --start <= --max-streams")
    if not 0 <= args.tolerance < 1:
        raise CommandError("--tolerance must be in [0, 1)")
    if not 0 < args.step_seconds <= args.max_step_seconds:
        raise CommandError("need 0 < --step-seconds <= --max-step-seconds")
    if args.settle_seconds < 0 or args.min_streams < 1:
        raise CommandError("--settle-seconds must be >= 0 and --min-streams >= 1")
    if (args.chunks is not None and args.chunks < 1) or (args.stream_seconds is not None and args.stream_seconds < 0):
        raise CommandError("--chunks must be >= 1 and --stream-seconds >= 0")
    if args.host and args.backend_profile:
        raise CommandError("--backend-profile is for the embedded fake backend: leave it out with --host")
    from analysis.capacity import SloError, load_slo

    try:
        args.slo_flag = load_slo().with_overrides(args.slo).flag()
    except SloError as exc:
        raise CommandError(str(exc)) from None


def locust_command(args: argparse.Namespace, host: str, out: Path, embedded: bool) -> list[str]:
    """The headless Locust run of the search (the same a user could type)."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        f"{LOCUSTFILE},{CAPACITY_LOCUSTFILE}",
        "--headless",
        "--host",
        host,
        "--transport",
        args.transport,
        "--endpoint",
        args.endpoint,
        "--slo",
        args.slo_flag,
        "--sweep-start",
        str(args.start),
        "--sweep-max-streams",
        str(args.max_streams),
        "--sweep-tolerance",
        f"{args.tolerance:g}",
        "--sweep-step-seconds",
        f"{args.step_seconds:g}",
        "--sweep-max-step-seconds",
        f"{args.max_step_seconds:g}",
        "--sweep-settle-seconds",
        f"{args.settle_seconds:g}",
        "--sweep-min-streams",
        str(args.min_streams),
        "--capacity-file",
        str(out / CAPACITY_FILE),
        "--results-dir",
        str(out / RUN_DIR),
        "--csv",
        str(out / RUN_DIR / "locust"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    chunks = args.chunks if args.chunks is not None else (FAKE_CHUNKS if embedded else None)
    seconds = args.stream_seconds if args.stream_seconds is not None else (FAKE_STREAM_SECONDS if embedded else None)
    if chunks is not None:
        cmd += ["--chunks", str(chunks)]
    if seconds is not None:
        cmd += ["--stream-seconds", f"{seconds:g}"]
    if args.backend_options:
        cmd += ["--backend-options", args.backend_options]
    return cmd + list(args.locust_args)


def run_locust(cmd: list[str]) -> int:
    """Locust in the foreground; Ctrl-C lets it write what the search found so far."""
    locust = subprocess.Popen(cmd, cwd=PACKAGES_ROOT, env=locust_env())
    try:
        return locust.wait()
    except KeyboardInterrupt:
        locust.send_signal(signal.SIGINT)
        return locust.wait()


def execute(args: argparse.Namespace) -> int:
    check(args)
    out = (args.out or RESULTS_ROOT / f"sweep-{new_run_id()}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    capacity_path = out / CAPACITY_FILE
    if capacity_path.exists():
        capacity_path.unlink()  # never report an older sweep's answer
    if args.host:
        from loadtests.options import OptionError, check_host

        try:
            check_host(args.host)
        except OptionError as exc:
            raise CommandError(str(exc)) from None
        rc = run_locust(locust_command(args, args.host, out, embedded=False))
    else:
        env = dict(os.environ)
        if args.backend_profile:
            env["FAKE_BACKEND_PROFILE"] = args.backend_profile
        try:
            with start_backend(env=env) as backend:
                print(f"fake backend on {backend.url}; capacity search into {out}", flush=True)
                rc = run_locust(locust_command(args, backend.url, out, embedded=True))
        except BackendStartError as exc:
            raise CommandError(str(exc)) from None
    if not capacity_path.is_file():
        raise CommandError(f"Locust exited {rc} without writing {capacity_path}")
    capacity = json.loads(capacity_path.read_text())
    capacity["results"] = RUN_DIR
    tmp = capacity_path.with_name(f".{CAPACITY_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(capacity, indent=2) + "\n")
    os.replace(tmp, capacity_path)
    from analysis.report import render_capacity_markdown
    from analysis.results import write_text_atomic

    write_text_atomic(out / CAPACITY_MARKDOWN, render_capacity_markdown(capacity))
    if args.out is None:
        point_latest(out.parent, out, "sweep-latest")
    print()
    for transport, result in capacity["transports"].items():
        print(f"{transport}: {result['summary']}")
    print(f"\ncapacity: {capacity_path} · {out / CAPACITY_MARKDOWN} · raw data: {out / RUN_DIR}")
    return 0
