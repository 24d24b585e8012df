"""``stream-harness run`` (``make bench``): the main job and the nightly job's one command.

Starts the fake backend on a free loopback port, runs a headless Locust load
that drives both transports, writes ``results/<run-id>/`` (raw data, summary,
report, charts, Locust's own CSV/HTML), points ``results/latest`` at it, prints
a short verdict table and stops everything it started — also on Ctrl-C, in
which case what was measured so far is still written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from fake_backend.process import start_backend
from stream_harness.allocator import locust_env
from stream_harness.cli.benchmark_json import write_benchmark_json
from stream_harness.cli.errors import CommandError
from stream_harness.cli.table import format_summary_table
from stream_harness.paths import LOCUSTFILE, PACKAGES_ROOT, RESULTS_ROOT

SUMMARY = "fake backend + headless Locust on both transports -> a result set, report and table"
EXAMPLES = """\
  stream-harness run                                  # what `make bench` does (60 s, 20 users)
  stream-harness run --seconds 10 --users 4
  stream-harness run --seconds 120 --warmup 20         # the first 20 s of streams in no statistic
  stream-harness run --transport ndjson --backend-options '{"buffer_ms": 100}'
  stream-harness run --http2 --users 10 --browser-users 2   # HTTP/2 NDJSON users, two Chromium pages
"""


def new_run_id() -> str:
    """Sortable and unique enough for one machine: UTC time plus pid."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"


def point_latest(results_root: Path, run_dir: Path, name: str = "latest") -> None:
    """Atomically repoint ``results/<name>`` (a relative symlink) at ``run_dir``."""
    link = results_root / name
    tmp = results_root / f".{name}-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    p.add_argument("--users", type=int, default=20, help="concurrent users, split over transports")
    p.add_argument("--transport", choices=("ndjson", "socketio", "both"), default="both")
    p.add_argument("--chunks", type=int, default=3000, help="chunks per stream (default 3000)")
    p.add_argument("--stream-seconds", type=float, default=10.0, help="stream length (default 10)")
    p.add_argument("--backend-options", default="", help="extra harness fields as JSON")
    p.add_argument("--backend-profile", default="", help="server-wide default profile for the fake backend (JSON)")
    p.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds at the start whose streams are kept but left out of every statistic (default 0)",
    )
    p.add_argument("--results-root", type=Path, default=RESULTS_ROOT, help="where result sets go (default ./results)")
    p.add_argument("--run-id", default="")
    p.add_argument("--no-report", action="store_true", help="skip report.md and charts")
    p.add_argument(
        "--http2",
        action="store_true",
        help="fake backend on Hypercorn (HTTP/1.1 and HTTP/2) and NDJSON users speaking HTTP/2 to it",
    )
    p.add_argument(
        "--browser-users", type=int, default=0, help="how many of the users are headless Chromium pages (default 0)"
    )


def check(args: argparse.Namespace) -> None:
    if args.seconds <= 0 or args.users <= 0 or args.chunks <= 0 or args.stream_seconds < 0:
        raise CommandError("--seconds, --users and --chunks must be positive, --stream-seconds >= 0")
    if not 0 <= args.warmup < args.seconds:
        raise CommandError(f"--warmup must be >= 0 and shorter than --seconds ({args.seconds:g}), got {args.warmup:g}")
    if not 0 <= args.browser_users <= args.users:
        raise CommandError("--browser-users must be between 0 and --users")
    if args.backend_options:
        try:
            if not isinstance(json.loads(args.backend_options), dict):
                raise ValueError
        except ValueError:
            raise CommandError("--backend-options must be a JSON object") from None


def locust_command(args: argparse.Namespace, host: str, run_dir: Path) -> list[str]:
    """The exact command a user could type; the README shows the same flags."""
    stop_timeout = int(args.stream_seconds * 2 + 15)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(max(1, args.users)),
        "-t",
        f"{args.seconds:g}s",
        "--stop-timeout",
        str(stop_timeout),
        "--host",
        host,
        "--transport",
        args.transport,
        "--chunks",
        str(args.chunks),
        "--stream-seconds",
        f"{args.stream_seconds:g}",
        "--results-dir",
        str(run_dir),
        "--csv",
        str(run_dir / "locust"),
        "--html",
        str(run_dir / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    if args.backend_options:
        cmd += ["--backend-options", args.backend_options]
    if args.warmup:
        cmd += ["--warmup", f"{args.warmup:g}"]
    if args.http2:
        cmd.append("--http2")
    if args.browser_users:
        cmd += ["--browser-users", str(args.browser_users)]
    return cmd


def execute(args: argparse.Namespace) -> int:
    check(args)
    run_dir = (args.results_root / (args.run_id or new_run_id())).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.backend_profile:
        env["FAKE_BACKEND_PROFILE"] = args.backend_profile
    with start_backend(*(["--http2"] if args.http2 else []), env=env) as backend:
        print(f"fake backend on {backend.url}; results in {run_dir}", flush=True)
        locust = subprocess.Popen(locust_command(args, backend.url, run_dir), cwd=PACKAGES_ROOT, env=locust_env())
        try:
            locust_rc = locust.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached Locust too (same process group): let it write results.
            locust.send_signal(signal.SIGINT)
            locust_rc = locust.wait()
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise CommandError(f"Locust exited {locust_rc} without writing {summary_path}")
    point_latest(run_dir.parent, run_dir)
    if not args.no_report:
        rc = subprocess.call([sys.executable, "-m", "stream_harness", "report", str(run_dir)], cwd=PACKAGES_ROOT)
        if rc != 0:
            raise CommandError(f"the report of {run_dir} failed (exit {rc})")
    summary = json.loads(summary_path.read_text())
    write_benchmark_json(run_dir)
    print(format_summary_table(summary))
    if not args.no_report:
        print(f"\nreport: {run_dir / 'report.md'}")
    return 0
