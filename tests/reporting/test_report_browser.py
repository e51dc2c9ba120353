"""The HTML report in a real headless Chromium, driven over the DevTools protocol.

Chromium comes from Debian (``scripts/install-chromium.sh``); without it this test FAILS
rather than skips. The page must load with no console error, no uncaught exception and no
request other than ``file:`` / ``data:`` URLs, and must show the leaderboard, the Gantt chart
and the curves; clicking a leaderboard header must sort it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from autolab.reporting.anomalies import Anomaly
from autolab.reporting.report import build_report
from autolab.reporting.synthetic import synthetic_curve, synthetic_lab

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: run scripts/install-chromium.sh (apt-get install "
                "chromium); this test does not skip")


class DevTools:
    """A minimal synchronous Chrome DevTools Protocol client over one websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 20.0) -> dict[str, Any]:
        msg_id = next(self.ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                assert "error" not in reply, reply
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev.get("method") == method:
                    return ev
            self.events.append(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def evaluate(self, session: str, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                        session)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    experiments = synthetic_lab(300, slots=6, seed=5)
    points = [p for e in experiments[::3] for p in synthetic_curve(e, 100, ("train_loss",))]
    anomalies = [Anomaly(experiments[7].id, "implausible_metric", "val_bpb improved 40 sigma <b>")]
    files = build_report(out, experiments, points, title="browser check", top=25, png=False,
                         anomalies=anomalies)
    return files.html


def test_report_loads_in_chromium_without_errors(report: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ws_url = None
        deadline = time.monotonic() + 30
        while ws_url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            if "DevTools listening on " in line:
                ws_url = line.split("DevTools listening on ", 1)[1].strip()
        assert ws_url, f"chromium did not start its DevTools endpoint (exit {proc.poll()})"
        from websockets.sync.client import connect

        with connect(ws_url, max_size=None, open_timeout=20) as ws:
            check_page(DevTools(ws), report)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_page(cdp: DevTools, report: Path) -> None:
    """Load the report and check what a reader would see."""
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"]
    for domain in ("Runtime", "Log", "Page", "Network"):
        cdp.send(f"{domain}.enable", session=session)
    cdp.events.clear()
    cdp.send("Page.navigate", {"url": report.as_uri()}, session)
    cdp.wait_for("Page.loadEventFired")

    assert cdp.evaluate(session, "document.body.getAttribute('data-ready')") == "1"
    found = cdp.evaluate(session, """({
        board: document.querySelectorAll('#leaderboard-table tbody tr').length,
        bars: document.querySelectorAll('#gantt-svg rect.bar').length,
        gantt_width: document.getElementById('gantt-svg').getBoundingClientRect().width,
        lines: document.querySelectorAll('#curves-svg polyline').length,
        anomaly: document.querySelector('#anomalies').textContent,
        sections: ['summary','leaderboard','promotions','curves','gantt','utilisation',
                   'anomalies'].filter(id => document.getElementById(id)).length
    })""")
    assert found["board"] == 25
    assert found["bars"] > 100 and found["gantt_width"] > 300
    assert found["lines"] >= 2
    assert "improved 40 sigma <b>" in found["anomaly"]  # text, not markup
    assert found["sections"] == 7

    # sorting is real: clicking "#" twice sorts descending, 25..1
    order = cdp.evaluate(session, """(() => {
        const th = document.querySelectorAll('#leaderboard-table thead th')[0];
        th.click(); th.click();
        return Array.from(document.querySelectorAll('#leaderboard-table tbody tr'))
                    .map(r => r.cells[0].textContent.trim());
    })()""")
    assert order == [str(i) for i in range(25, 0, -1)]

    cdp.send("Runtime.evaluate", {"expression": "1"}, session)  # flush pending events
    errors = [ev for ev in cdp.events if ev.get("method") == "Runtime.exceptionThrown"
              or (ev.get("method") == "Runtime.consoleAPICalled"
                  and ev["params"]["type"] in ("error", "assert", "warning"))
              or (ev.get("method") == "Log.entryAdded"
                  and ev["params"]["entry"]["level"] in ("error", "warning"))]
    assert errors == [], json.dumps(errors, indent=1)[:3000]
    urls = [ev["params"]["request"]["url"] for ev in cdp.events
            if ev.get("method") == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
