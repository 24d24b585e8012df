"""Keeping the run's credentials out of everything it writes or shows.

Two ways a secret could escape:

- a careless backend echoes credentials back ("401: invalid token eyJ...",
  a Socket.io connect refusal naming the token), and the harness keeps that
  text as the stream's ``error_detail`` in ``streams.parquet``;
- Locust's web UI puts every custom parameter's command-line value into the
  page (``window.templateArgs``), secret ones included: the field is masked,
  the value is in the HTML.

So every record is scrubbed before it leaves its user (:func:`redact_record`),
and the web UI page carries :data:`REDACTED` instead of a command-line secret
(:func:`protect_secrets`).  A run started from the page with that placeholder
untouched uses the command-line value again (:func:`command_line_secret`, used
by ``RunOptions.from_namespace``); the value rides along in
``parsed_options`` so workers resolve it the same way.

Secrets shorter than :data:`MIN_SECRET_CHARS` are not scrubbed from free text:
replacing every "ab" in a page would wreck it, and such a value protects nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from loadtests.results.record import StreamRecord

REDACTED: Final = "[redacted]"
SECRET_OPTIONS: Final = ("auth_token", "fingerprint_id")
MIN_SECRET_CHARS: Final = 4
#: parsed_options attribute holding the command-line secrets (not a Locust option:
#: never in the web UI's parameters, but shipped to workers with the rest).
CLI_SECRETS_ATTR: Final = "stream_harness_cli_secrets"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (as written, or JSON / HTML-escaped) replaced by REDACTED."""
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET_CHARS:
            continue
        for form in _written_forms(secret):
            if form in text:
                text = text.replace(form, REDACTED)
    return text


def redact_record(record: StreamRecord, secrets: Iterable[str]) -> None:
    """Scrub the free-text fields a server can fill (failure detail, content encoding)."""
    secrets = tuple(secrets)
    if not secrets:
        return
    if record.error_detail:
        record.error_detail = redact(record.error_detail, secrets)
    if record.content_encoding:
        record.content_encoding = redact(record.content_encoding, secrets)


def command_line_secret(ns: Any, name: str, value: str) -> str:
    """``value`` of secret option ``name``, or the command line's when it is the page's placeholder."""
    if value != REDACTED:
        return value
    return str((getattr(ns, CLI_SECRETS_ATTR, None) or {}).get(name, ""))


def protect_secrets(environment: Any) -> None:
    """``init`` listener part: remember the command-line secrets, keep them out of the web UI page."""
    options = environment.parsed_options
    if options is None:
        return
    if getattr(options, CLI_SECRETS_ATTR, None) is None:
        setattr(options, CLI_SECRETS_ATTR, {name: str(getattr(options, name, "") or "") for name in SECRET_OPTIONS})
    web_ui = environment.web_ui
    if web_ui is None:
        return
    secrets = [v for v in getattr(options, CLI_SECRETS_ATTR).values() if v]

    @web_ui.app.after_request
    def _scrub_page(response: Any) -> Any:
        if secrets and response.mimetype == "text/html" and not response.direct_passthrough:
            html = response.get_data(as_text=True)
            scrubbed = redact(html, secrets)
            if scrubbed != html:
                response.set_data(scrubbed)
        return response


def _written_forms(secret: str) -> set[str]:
    """How a secret can appear in text: raw, inside a JSON string, inside an HTML-safe JSON string."""
    json_inner = json.dumps(secret)[1:-1]
    html_inner = (
        json_inner.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")
    )
    return {secret, json_inner, html_inner}
