"""Drives examples/browser-upload/index.html in headless Chromium (Playwright's Python client,
pointed at Debian's chromium: Playwright's own browser download is never used).

Run by tests/it/presign.rs (`a_browser_uploads_a_real_photo_through_the_example_page`), which
starts the strict S3, the sidecar and the page's server, and checks the stored object. This
script fills the form as a person would, picks the file, clicks Upload, waits for the page to
show the thumbnail, and prints what the page showed as one JSON line:
{"state", "key", "content_type", "progress", "thumbnail_width"}. Exit 0 only if the page
reached "ready"; otherwise it prints the page's state, status text and console, and exits 1.
"""

import argparse
import json
import sys
import tempfile

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--page", required=True, help="the example page's URL, with its query")
    parser.add_argument("--chromium", required=True, help="the chromium executable")
    parser.add_argument("--token", required=True)
    parser.add_argument("--file", required=True, help="the photo to upload")
    parser.add_argument("--screenshot", help="where to save a screenshot of the final page")
    parser.add_argument("--timeout-ms", type=int, default=60_000)
    args = parser.parse_args()

    console = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(args.page)
            page.fill("#token", args.token)
            page.set_input_files("#file", args.file)
            page.click("#upload")
            try:
                page.wait_for_selector(
                    "#status[data-state=ready], #status[data-state=error]",
                    timeout=args.timeout_ms,
                )
            except Exception as e:  # a time-out: report below with the page's state
                console.append(f"wait: {e}")
            result = page.evaluate(
                """() => {
                    const s = document.getElementById("status");
                    const img = document.getElementById("thumbnail");
                    return {
                        state: s.dataset.state,
                        text: s.textContent,
                        key: s.dataset.key || null,
                        content_type: s.dataset.contentType || null,
                        progress: document.getElementById("progress").value,
                        thumbnail_width: img.complete && img.getAttribute("src") ? img.naturalWidth : 0,
                    };
                }"""
            )
            if args.screenshot:
                page.screenshot(path=args.screenshot, full_page=True)
        finally:
            browser.close()

    print(json.dumps(result))
    if result["state"] != "ready":
        print(f"the page ended in state {result['state']!r}: {result['text']}", file=sys.stderr)
        for line in console:
            print(f"  console {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
