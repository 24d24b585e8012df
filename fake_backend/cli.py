"""The fake backend's command line: ``python -m fake_backend`` and ``stream-harness backend``.

``[--host H] [--port P] [--require-auth] [--tls-cert PEM --tls-key PEM] [--http2] [shape/fault defaults]``

Every harness key is also a flag (``--chunks``, ``--buffer-ms``, ``--gzip`` ...)
setting the server-wide default; ``FAKE_BACKEND_PROFILE`` (a JSON object with
the same keys) sets defaults under the flags; a request's own field wins.
"""

from __future__ import annotations

import argparse
import os
import sys

from fake_backend.control import DEFAULT_SEND_TIMEOUT_S, FIELDS, BackendConfig, ControlError, profile_from_env

SUMMARY = "the fake backend alone: both transports, fault injection, emit times"
EXAMPLES = """\
  stream-harness backend --port 8000
  stream-harness backend --port 0 --require-auth --buffer-ms 100     # every stream buffered
  FAKE_BACKEND_PROFILE='{"pacing": "llm"}' stream-harness backend
  stream-harness backend --tls-cert cert.pem --tls-key key.pem   # https:// and wss://
  stream-harness backend --http2                                  # HTTP/2 (h2c) and HTTP/1.1 on one port
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = pick a free one)")
    parser.add_argument(
        "--require-auth",
        action="store_true",
        help="401 without Bearer/X-Fingerprint-ID; refuse Socket.io without auth.token",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve https/wss with this certificate (chain)")
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--http2",
        action="store_true",
        help="serve HTTP/2 as well (Hypercorn): prior knowledge on plain TCP, ALPN h2 with --tls-cert",
    )
    parser.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    parser.add_argument(
        "--send-timeout",
        type=float,
        default=DEFAULT_SEND_TIMEOUT_S,
        metavar="S",
        help="end a stream whose client has read nothing for S seconds "
        f"(slow consumer; default {DEFAULT_SEND_TIMEOUT_S:g}, 0 = never)",
    )
    defaults = parser.add_argument_group("stream shape / fault defaults (a request's harness field wins)")
    for key in FIELDS:
        flag = "--" + key.name.replace("_", "-")
        if key.kind is bool:
            defaults.add_argument(
                flag, dest=key.name, action=argparse.BooleanOptionalAction, default=None, help=key.help
            )
        else:
            defaults.add_argument(flag, dest=key.name, type=key.kind, default=None, help=key.help)


def execute(args: argparse.Namespace) -> int:
    try:
        profile = profile_from_env(os.environ)
        flags = {key.name: getattr(args, key.name) for key in FIELDS if getattr(args, key.name) is not None}
        config = BackendConfig(
            require_auth=args.require_auth, defaults={**profile, **flags}, send_timeout_s=args.send_timeout
        )
    except ControlError as exc:
        print(f"fake_backend: bad server default: {exc}", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("fake_backend: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    for path in filter(None, (args.tls_cert, args.tls_key)):
        if not os.access(path, os.R_OK):
            print(f"fake_backend: cannot read {path}", file=sys.stderr)
            return 2
    from fake_backend.app import create_app
    from fake_backend.server import TLSFiles, bind, serve, serve_http2

    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"fake_backend: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    tls = TLSFiles(args.tls_cert, args.tls_key) if args.tls_cert else None
    if args.http2:
        try:
            serve_http2(create_app(config), sock, args.log_level, tls)
        except OSError as exc:  # ssl.SSLError is an OSError
            print(f"fake_backend: cannot serve TLS with {args.tls_cert}: {exc}", file=sys.stderr)
            return 1
        return 0
    serve(create_app(config), sock, args.log_level, tls)
    return 0
