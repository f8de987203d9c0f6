"""The live status page in a real browser (Debian's chromium, headless, driven by selenium):
it lists the fleet, and when the primary's process is killed its row turns degraded within
3 s without a reload, with no console errors.

Skipped when chromium or chromedriver is missing, unless ``TRIO_MCP_REQUIRE_BROWSER`` is set
(``.ci/run`` installs both and sets it).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _support import stdio_demo

from web.serve import serve

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "page-token"
SCREENSHOT = os.environ.get("TRIO_MCP_PAGE_SCREENSHOT")
"""Where to keep a screenshot of the page (docs/status-page.png is made this way)."""

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("TRIO_MCP_REQUIRE_BROWSER"):
        raise RuntimeError(
            "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
        )
    pytest.skip("chromium / chromedriver not installed", allow_module_level=True)


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,700"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def _rows(driver: Any) -> dict[str, str]:
    rows = driver.find_elements("css selector", "#servers tr")
    return {row.get_attribute("data-server"): row.get_attribute("data-status") for row in rows}


def _wait(predicate: Any, within: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s")
        time.sleep(0.05)
    return time.monotonic() - start


async def test_the_page_follows_the_fleet_live(tmp_path: Path) -> None:
    gate = tmp_path / "primary-may-start"
    gate.touch()
    configs = [stdio_demo("primary", gate=gate), stdio_demo("backup")]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(serve, configs, port=0, token=TOKEN, shutdown_trigger=stop.wait)
        )
        base = binds[0]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            with trio.fail_after(20):
                while {s["status"] for s in (await client.get("/api/v1/mcp/servers")).json()["servers"]} != {
                    "healthy"
                }:
                    await client.post("/api/v1/mcp/servers/health-check")
            answer = await client.post(
                "/api/v1/mcp/invoke/tool",
                json={"tool_name": "pid", "preferred_servers": ["primary"], "failover": "never"},
            )
            primary_pid = answer.json()["result"]["structuredContent"]["result"]
            driver = await trio.to_thread.run_sync(_browser)
            try:
                print("browser:", driver.capabilities.get("browserVersion"), CHROMIUM)

                def open_page() -> None:
                    driver.get(f"{base}/#token={TOKEN}")
                    _wait(lambda: _rows(driver) == {"primary": "healthy", "backup": "healthy"}, 10)
                    driver.execute_script("window.notReloaded = true")

                await trio.to_thread.run_sync(open_page)
                gate.unlink()  # the primary stays down once killed
                os.kill(primary_pid, signal.SIGKILL)

                def turns_degraded() -> float:
                    return _wait(lambda: _rows(driver).get("primary") in ("degraded", "unreachable"), 3.0)

                took = await trio.to_thread.run_sync(turns_degraded)
                print(f"primary's row turned {_rows(driver)['primary']} {took:.2f} s after the kill")
                assert driver.execute_script("return window.notReloaded === true")
                assert _rows(driver)["backup"] == "healthy"
                live = driver.find_element("id", "live").text
                assert live == "live", live
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert errors == []
                if SCREENSHOT:
                    await trio.to_thread.run_sync(driver.save_screenshot, SCREENSHOT)
            finally:
                await trio.to_thread.run_sync(driver.quit)
        stop.set()
