"""``python -m fake_backend [--host H] [--port P] ...``: see ``fake_backend.cli``."""

from __future__ import annotations

import argparse
import sys

from fake_backend.cli import SUMMARY, configure, execute

parser = argparse.ArgumentParser(prog="python -m fake_backend", description=SUMMARY)
configure(parser)
sys.exit(execute(parser.parse_args()))
