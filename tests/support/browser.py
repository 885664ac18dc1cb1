"""A real browser for the tests: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver, both given by path so that nothing ever downloads a browser or a driver (Selenium
Manager is skipped when the Service names the driver)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.support.processes import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1200, 900
# Chromium's own requests that an offline test run has no use for, and noise in its log.
QUIET = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--metrics-recording-only",
]


def missing_browser() -> str | None:
    """Why the browser tests can't run here, or None."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return (
            f"no {' or '.join(absent)} (Debian's chromium and chromium-driver packages; "
            ".ci/run installs them as root)"
        )
    return None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the browser's console log, as chromedriver reports it."""

    level: str
    message: str


class Browser:
    """A headless Chromium of a test's own, its profile in `directory`; quit() stops it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--user-data-dir={directory / 'profile'}",
            *QUIET,
        ]:
            options.add_argument(argument)
        # The console's messages, errors included, for log() to collect.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(
            executable_path=str(CHROMEDRIVER), log_output=str(directory / "chromedriver.log")
        )
        self.driver = webdriver.Chrome(options=options, service=service)
        # --window-size sizes the window, toolbars included even when headless: the viewport,
        # what a page and a screenshot get, is set here.
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        self.driver.set_page_load_timeout(30)
        self.seen: list[LogEntry] = []

    def log(self) -> list[LogEntry]:
        """Every console entry since the browser started (chromedriver hands each out once)."""
        self.seen += [
            LogEntry(entry["level"], entry["message"]) for entry in self.driver.get_log("browser")
        ]
        return list(self.seen)

    def errors(self) -> list[LogEntry]:
        return [entry for entry in self.log() if entry.level == "SEVERE"]

    def text(self, element_id: str) -> str:
        """The text of the element with this id as the page shows it; "" if there is none."""
        found = self.driver.find_elements(By.ID, element_id)
        return found[0].text if found else ""

    def wait_text(
        self, element_id: str, accept: Callable[[str], bool], timeout: float, what: str
    ) -> str:
        """Poll the element's text until `accept` holds; that text, or the last one seen in
        the failure."""
        last = [""]

        def check() -> bool:
            last[0] = self.text(element_id)
            return accept(last[0])

        try:
            wait_for(check, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; #{element_id} last read {last[0]!r}") from None
        return last[0]

    def quit(self) -> None:
        self.driver.quit()
