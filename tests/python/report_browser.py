"""Render a riskstrat report in headless Chromium (Debian's /usr/bin/chromium, driven
by Playwright from PyPI; no browser is downloaded) and say what a reader sees.

    python report_browser.py REPORT.html SCREENSHOT_DIR

Prints one JSON object: console errors and page errors, every request the page made
other than the report itself, the time to the load event, each section's screenshot
(one PNG per <section>, by id), and the numbers the page shows as text: the AUC, the
calibration slope, cohort sizes and tier sizes (read from the rendered DOM, not from
riskstrat's files). tests/report.rs compares them with the run's metrics.json and
manifest.json.
"""

import json
import os
import pathlib
import sys
import time

from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main(report, shots):
    url = pathlib.Path(report).resolve().as_uri()
    out = {"console_errors": [], "page_errors": [], "requests": [], "sections": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on(
            "console",
            lambda m: out["console_errors"].append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: out["page_errors"].append(str(e)))
        page.on(
            "request",
            lambda r: out["requests"].append(r.url) if r.url != url else None,
        )
        start = time.monotonic()
        page.goto(url, wait_until="load")
        out["load_seconds"] = time.monotonic() - start
        out["scripts"] = page.locator("script").count()
        for section in page.locator("section").all():
            sid = section.get_attribute("id")
            path = os.path.join(shots, f"{sid}.png")
            section.screenshot(path=path)
            out["sections"][sid] = os.path.getsize(path)
        text = lambda sel: page.locator(sel).first.inner_text() if page.locator(sel).count() else None
        out["auc_text"] = text("#m-auc")
        out["slope_text"] = text("#m-slope")
        out["population_text"] = text("#s-population")
        out["cohorts"] = {
            cell.get_attribute("data-cohort"): cell.inner_text()
            for cell in page.locator("#cohorts td[data-cohort]").all()
        }
        # Tier sizes as drawn: each bar's row label and value, and its rendered width.
        out["tiers"] = [
            {
                "tier": bar.get_attribute("data-row"),
                "value": bar.get_attribute("data-value"),
                "width": bar.bounding_box()["width"] if bar.bounding_box() else None,
            }
            for bar in page.locator("#chart-tiers rect.bar").all()
        ]
        # Every chart has an accessible name and a description.
        out["charts"] = [
            {
                "id": fig.get_attribute("id"),
                "title": fig.locator("svg > title").text_content(),
                "desc": fig.locator("svg > desc").text_content(),
                "role": fig.locator("svg").get_attribute("role"),
            }
            for fig in page.locator("figure.chart").all()
        ]
        browser.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
