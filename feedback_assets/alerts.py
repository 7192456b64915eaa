"""Telling the data engineers that a run failed: one log line and, with FEEDBACK_ALERT_WEBHOOK_URL,
a JSON POST. No Dagster here; the sensor in `defs/alerts.py` builds the Alert from the run.

An alert says which run, which days, which step and why, and links to the run in the UI. The
reason is the project's own failure message (written to name settings and files, never a value of
a row) or, for any other error, only its type: an unexpected error's text may quote data.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

WEBHOOK_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Alert:
    run_id: str
    job: str
    days: str
    failed_step: str
    reason: str
    run_page: str

    def line(self) -> str:
        return (
            f"feedback_assets ALERT: run {self.run_id} of {self.job} for {self.days or 'no day'} failed in "
            f"{self.failed_step}: {self.reason} ({self.run_page})"
        )

    def payload(self) -> bytes:
        return json.dumps({"source": "feedback_assets", "status": "failed", **asdict(self)}, sort_keys=True).encode()


def run_page(ui_url: str, run_id: str) -> str:
    """The run's page under FEEDBACK_UI_URL, as AlertSettings checked it."""
    return f"{ui_url}/runs/{run_id}"


def post(webhook_url: str, alert: Alert) -> None:
    """POST the alert as JSON to FEEDBACK_ALERT_WEBHOOK_URL, as AlertSettings checked it (http or
    https); a webhook that fails raises ConnectionError without repeating its URL."""
    request = urllib.request.Request(
        webhook_url,
        data=alert.payload(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or type(exc).__name__
        raise ConnectionError(f"FEEDBACK_ALERT_WEBHOOK_URL did not take the alert: {reason}") from None
