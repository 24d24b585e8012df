"""Debian's Chromium for the browser users: where it is, how it starts, what it trusts.

Never a downloaded browser build: Playwright drives ``/usr/bin/chromium``
(``make browser`` installs it) through ``executable_path``.

TLS trust follows the protocol clients.  Chromium does not read OpenSSL's
``SSL_CERT_FILE`` nor a PEM file, so the certificates of ``--ca-file`` (and
of ``SSL_CERT_FILE`` when set, which the protocol clients trust through
OpenSSL) are passed as ``--ignore-certificate-errors-spki-list``: a chain
that does not verify is accepted when one of its certificates has one of
those public keys.  That covers a self-signed certificate and a private CA
whose server sends the CA certificate in its chain; ``insecure`` accepts any
certificate (Playwright's ``ignore_https_errors``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CHROMIUM: Final = Path("/usr/bin/chromium")
#: Flags for a load machine: no sandbox (root), no GPU, nothing phoning home; and
#: every page treated as the visible tab a user watches (no timer or frame
#: throttling of background pages).  QUIC is off: HTTP/2 is what is measured.
LAUNCH_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-features=LocalNetworkAccessChecks",
)


class BrowserUnavailable(Exception):
    """Chromium or Playwright is missing; ``str()`` is one line saying what to install."""


def check_available(chromium: Path = CHROMIUM) -> None:
    """Raise :class:`BrowserUnavailable` unless browser users can start here."""
    if not (chromium.exists() and os.access(chromium, os.X_OK)):
        raise BrowserUnavailable(
            f"--browser-users needs Debian's chromium at {chromium} (`make browser`, or apt-get install chromium)"
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise BrowserUnavailable("--browser-users needs the playwright package (pip install playwright)") from None


def spki_hashes(pem_file: str | os.PathLike[str]) -> list[str]:
    """base64(SHA-256(SubjectPublicKeyInfo)) of every certificate in a PEM file, as Chromium wants them."""
    data = Path(pem_file).read_bytes()
    hashes = []
    with warnings.catch_warnings():  # old roots in system bundles break newer rules; their keys still count
        warnings.simplefilter("ignore")
        certificates = x509.load_pem_x509_certificates(data)
    for certificate in certificates:
        spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        hashes.append(base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii"))
    return hashes


def trust_args(ca_file: str | None, environ: dict[str, str] | None = None) -> list[str]:
    """Chromium flags trusting ``ca_file`` and ``SSL_CERT_FILE`` (unreadable files are skipped)."""
    env = os.environ if environ is None else environ
    hashes: list[str] = []
    for path in (ca_file, env.get("SSL_CERT_FILE")):
        if not path:
            continue
        try:
            hashes.extend(h for h in spki_hashes(path) if h not in hashes)
        except (OSError, ValueError):
            continue
    return [f"--ignore-certificate-errors-spki-list={','.join(hashes)}"] if hashes else []
