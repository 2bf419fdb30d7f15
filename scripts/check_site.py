"""Open the built website in a real headless browser and check every page (``make browser``).

On every page of ``_build/html`` (desktop 1280x900 and phone 390x844):

- no console error, no uncaught exception, no failed request;
- math is typeset by MathJax wherever the page has math (and no MathJax error box);
- at phone size the chapter list (primary sidebar) opens from the menu button, and on the desktop
  the same button does something to the sidebar;
- every hidden solution opens when its toggle is clicked;
- every kernel-free interactive figure (``.s2s-interactive``) shows something else when its
  control moves;

and, over all pages, no internal link points to a missing page or anchor.

The browser is Debian's chromium (``make chromium`` installs it, as root), driven by
playwright-python with ``executable_path``; nothing is downloaded by playwright. The pages load
MathJax, require.js and the widget manager from CDNs; the check serves those files from local
copies of the same npm packages (``npm pack``, cached under ``~/.cache/s2s-course/npm``), so it
needs no network once the cache is filled. When chromium, playwright or (with an empty cache)
npm is missing it prints one ``SKIP:`` line and exits 0; every other problem exits 1.

    python scripts/check_site.py [--site _build/html] [--shots DIR] [--only PAGE ...]
"""
from __future__ import annotations

import argparse
import json
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "http://s2s-course.test"  # the site is served to the browser from disk at this origin
CHROMIUM = os.environ.get("S2S_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
CACHE = Path(os.environ.get("S2S_NPM_CACHE",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "s2s-course" / "npm"))
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# CDN address -> (npm package spec, path of the file inside the package). jsdelivr's /npm/ paths
# are npm packages already; cdnjs serves require.js from the requirejs package.
CDNJS_REQUIRE = re.compile(r"^https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/([\d.]+)/require(?:\.min)?\.js$")
JSDELIVR_NPM = re.compile(r"^https://cdn\.jsdelivr\.net/npm/((?:@[^/@]+/)?[^/@]+)@([^/]+)/(.*)$")


class Skip(Exception):
    """The browser check cannot run here (not a failure of the site)."""


# --- local copies of the CDN files ---------------------------------------------------------

def cdn_target(url: str) -> tuple[str, str, str] | None:
    """(package, version spec, path in package) for a CDN address the pages use, else None."""
    url = url.split("?")[0].split("#")[0]
    m = CDNJS_REQUIRE.match(url)
    if m:
        return "requirejs", m.group(1), "require.js"
    m = JSDELIVR_NPM.match(url)
    if m:
        return m.group(1), m.group(2), m.group(3)
    return None


def npm_package(name: str, spec: str) -> Path:
    """The unpacked npm package ``name@spec`` (fetched once with ``npm pack``, then cached)."""
    folder = CACHE / f"{name.replace('/', '+')}@{spec}"
    if (folder / "package" / "package.json").is_file():
        return folder / "package"
    npm = shutil.which("npm")
    if npm is None:
        raise Skip(f"npm is not installed and {name}@{spec} is not cached in {CACHE}")
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([npm, "pack", "--silent", f"{name}@{spec}"], cwd=folder, capture_output=True,
                         text=True, timeout=300)
    tgz = [p for p in folder.glob("*.tgz")]
    if out.returncode != 0 or not tgz:
        raise Skip(f"npm pack {name}@{spec} failed (no registry?): {out.stderr.strip()[-300:]}")
    with tarfile.open(tgz[0]) as tar:
        tar.extractall(folder, filter="data")
    tgz[0].unlink()
    return folder / "package"


# --- the site on disk ----------------------------------------------------------------------

class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def broken_links(site: Path) -> list[str]:
    """Internal links (relative hrefs) whose file or #anchor does not exist in the built site."""
    pages: dict[Path, _Links] = {}
    for path in site.rglob("*.html"):
        if "_static" in path.parts or "_sources" in path.parts:
            continue
        parser = _Links()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        pages[path.resolve()] = parser
    problems = []
    for path, parser in sorted(pages.items()):
        for href in parser.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            name = path.relative_to(site.resolve())
            if not target.exists():
                problems.append(f"{name}: link to missing {href}")
                continue
            if parts.fragment and target.suffix == ".html" and target in pages:
                if unquote(parts.fragment) not in pages[target].ids:
                    problems.append(f"{name}: link to missing anchor {href}")
    return problems


def site_pages(site: Path) -> list[str]:
    skip = {"genindex.html", "search.html"}
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts and p.name not in skip)


# --- the browser ---------------------------------------------------------------------------

class Router:
    """Serves the site from disk and the CDN files from the npm cache; refuses everything else."""

    def __init__(self, site: Path) -> None:
        self.site = site.resolve()
        self.refused: list[str] = []

    def _file(self, route, path: Path) -> None:
        if not path.is_file():
            route.fulfill(status=404, body="not found")
            return
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix in (".js", ".mjs"):
            ctype = "application/javascript"
        headers = {"content-type": ctype, "access-control-allow-origin": "*"}
        route.fulfill(status=200, body=path.read_bytes(), headers=headers)

    def __call__(self, route) -> None:
        url = route.request.url
        if url.startswith(ORIGIN + "/"):
            rel = unquote(urlsplit(url).path).lstrip("/")
            path = (self.site / rel).resolve()
            if path.is_dir():
                path = path / "index.html"
            if self.site not in path.parents and path != self.site:
                route.fulfill(status=403, body="outside the site")
                return
            self._file(route, path)
            return
        target = cdn_target(url)
        if target is not None:
            name, spec, inner = target
            self._file(route, npm_package(name, spec) / inner)
            return
        self.refused.append(url)
        route.abort()


def launch(playwright):
    if not Path(CHROMIUM).exists():
        raise Skip(f"no chromium at {CHROMIUM} (run `make chromium` as root, or apt-get install chromium)")
    try:  # playwright starts it with a new, empty profile (user data dir) of its own
        return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    except Exception as err:  # noqa: BLE001 - any launch failure means "cannot check here"
        raise Skip(f"chromium at {CHROMIUM} does not start: {str(err).splitlines()[0]}") from err


PAGE_FACTS_JS = """() => {
  const math = document.querySelectorAll('.math, span.math, div.math').length;
  const typeset = document.querySelectorAll('mjx-container').length;
  const merror = document.querySelectorAll('mjx-merror').length;
  return {math, typeset, merror};
}"""


def wait_for_mathjax(page) -> None:
    page.wait_for_function("""() => !window.MathJax || !window.MathJax.startup ||
        (window.MathJax.startup.promise && (window.__s2sMath = window.__s2sMath ||
            window.MathJax.startup.promise.then(() => { window.__s2sMathDone = true; }), window.__s2sMathDone))""",
                           timeout=20000)


def visible_width(page, selector: str) -> float:
    return page.evaluate("""(sel) => { const el = document.querySelector(sel); if (!el) return -1;
        const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
        if (s.display === 'none' || s.visibility === 'hidden') return 0;
        return Math.max(0, Math.min(r.right, window.innerWidth) - Math.max(r.left, 0)); }""", selector)


def check_sidebar(page, phone: bool, shot: Path | None = None) -> str | None:
    """Click the visible 'toggle primary sidebar' button; the chapter list must show (phone)."""
    buttons = page.locator("button.primary-toggle, label.sidebar-toggle.primary-toggle, "
                           "button[aria-label*='primary sidebar' i]")
    visible = [buttons.nth(i) for i in range(buttons.count()) if buttons.nth(i).is_visible()]
    if not visible:
        return "no visible button to open the chapter list"
    sidebar = "#pst-primary-sidebar, .bd-sidebar-primary"
    before = visible_width(page, sidebar)
    visible[0].click()
    page.wait_for_timeout(500)  # the drawer slides in
    after = visible_width(page, sidebar)
    if shot:
        page.screenshot(path=str(shot))
    links = page.evaluate("""() => { const s = document.querySelector('#pst-primary-sidebar, .bd-sidebar-primary');
        if (!s) return 0; return [...s.querySelectorAll('a.reference.internal')].filter(a => {
          const r = a.getBoundingClientRect(); return r.width > 0 && r.height > 0 &&
            r.right > 0 && r.left < window.innerWidth; }).length; }""")
    if phone and (after < 200 or links < 3):
        return f"chapter list did not open at phone size (sidebar width {before:.0f} -> {after:.0f}, {links} links visible)"
    if not phone and abs(after - before) < 50 and links < 3:
        return f"menu button did nothing on the desktop (sidebar width {before:.0f} -> {after:.0f})"
    page.keyboard.press("Escape")
    return None


SOLUTIONS_JS = """() => {
  const shown = (el) => !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  return [...document.querySelectorAll('.solution.dropdown, .solution.toggle')].map((box) => {
    const button = box.querySelector('button.toggle-button');
    const body = box.querySelector('.admonition-title ~ *');
    const before = shown(body);
    if (button) { button.click(); }
    return {button: !!button, before};
  });
}"""
SOLUTIONS_AFTER_JS = """() => [...document.querySelectorAll('.solution.dropdown, .solution.toggle')].map((box) => {
  const body = box.querySelector('.admonition-title ~ *');
  return !!body && body.getClientRects().length > 0 && getComputedStyle(body).visibility !== 'hidden';
})"""


def check_solutions(page) -> list[str]:
    """Every hidden solution is hidden at first and shows once its toggle button is clicked."""
    problems = []
    before = page.evaluate(SOLUTIONS_JS)
    if not before:
        return problems
    page.wait_for_timeout(300)
    after = page.evaluate(SOLUTIONS_AFTER_JS)
    for i, (b, shown) in enumerate(zip(before, after), start=1):
        if not b["button"]:
            problems.append(f"solution {i}: no toggle button")
        elif b["before"] or not shown:
            problems.append(f"solution {i}: hidden before click={not b['before']}, shown after={shown}")
    return problems


def check_interactive(page) -> list[str]:
    """Each .s2s-interactive figure must show something else after each of its controls moves
    (every slider, then the first drop-down)."""
    problems = []
    figs = page.locator(".s2s-interactive")
    for i in range(figs.count()):
        fig = figs.nth(i)
        fig.scroll_into_view_if_needed()
        shown = fig.locator("[data-s2s-view]")

        def html() -> str:
            return shown.inner_html() if shown.count() else fig.inner_html()

        moves = []  # (control, changed?)
        sliders = fig.locator("input[type=range]")
        for k in range(sliders.count()):
            before = html()
            sliders.nth(k).evaluate("""(el) => { el.value = String(+el.value < +el.max ? +el.value + 1 : +el.value - 1);
                el.dispatchEvent(new Event('input', {bubbles: true})); }""")
            moves.append((f"slider {k + 1}", html() != before))
        select = fig.locator("select")
        if select.count() and select.first.locator("option").count() > 1:
            before = html()
            select.first.select_option(index=1)
            moves.append(("drop-down", html() != before))
        if not moves:
            problems.append(f"interactive figure {i + 1}: no control to move")
        for control, changed in moves:
            if not changed:
                problems.append(f"interactive figure {i + 1}: moving its {control} did not change the figure")
    return problems


def check_page(context, rel: str, phone: bool, shots: Path | None) -> list[str]:
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    problems: list[str] = []
    page.goto(f"{ORIGIN}/{rel}", wait_until="load")
    wait_for_mathjax(page)
    page.wait_for_timeout(300)
    facts = page.evaluate(PAGE_FACTS_JS)
    if facts["math"] and facts["typeset"] < facts["math"]:
        problems.append(f"math not rendered: {facts['typeset']} of {facts['math']} formulas typeset")
    if facts["merror"]:
        problems.append(f"{facts['merror']} MathJax errors")
    name = f"{rel.replace('/', '_').removesuffix('.html')}-{'phone' if phone else 'desktop'}"
    if shots:
        page.screenshot(path=str(shots / f"{name}.png"))
    if phone:
        problems += check_solutions(page)
        problems += check_interactive(page)
        kernel_bound = page.locator(".jupyter-widgets input, .jupyter-widgets select, .jupyter-widgets .slider").count()
        if kernel_bound:
            print(f"NOTE {rel}: {kernel_bound} ipywidgets control(s) call Python and cannot respond "
                  f"without a kernel; not checked (use s2s_course.interactive for kernel-free figures)")
    page.evaluate("window.scrollTo(0, 0)")
    problem = check_sidebar(page, phone, shots / f"{name}-menu.png" if shots else None)
    if problem:
        problems.append(problem)
    page.close()
    return problems + errors


def run(site: Path, shots: Path | None, only: list[str], verbose: bool = False) -> int:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise Skip("playwright (pip package) is not installed") from None
    pages = [p for p in site_pages(site) if not only or any(o in p for o in only)]
    failures: dict[str, list[str]] = {}
    links = broken_links(site)
    if links:
        failures["(links)"] = links
    # Fetch every npm package the pages load before the browser starts (a failure is one SKIP line).
    for text in (p.read_text(encoding="utf-8", errors="replace") for p in site.rglob("*.html")):
        for url in set(re.findall(r"""https://cdn[\w.-]*\.(?:net|com)/[^"'\s<>]+""", text)):
            target = cdn_target(url)
            if target:
                npm_package(target[0], target[1])
    router = Router(site)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            for phone in (False, True):
                context = browser.new_context(viewport=PHONE if phone else DESKTOP, is_mobile=phone,
                                              has_touch=phone, device_scale_factor=1,
                                              service_workers="block")
                context.route("**/*", router)
                for rel in pages:
                    t0 = time.monotonic()
                    problems = check_page(context, rel, phone, shots)
                    if verbose:
                        print(f"  {rel} ({'phone' if phone else 'desktop'}): {time.monotonic() - t0:.1f} s", flush=True)
                    if problems:
                        failures.setdefault(f"{rel} ({'phone' if phone else 'desktop'})", []).extend(problems)
                context.close()
        finally:
            browser.close()
    print(f"browser check: {len(pages)} pages x 2 sizes, chromium {CHROMIUM}")
    for where, problems in failures.items():
        for p in dict.fromkeys(problems):
            print(f"FAIL {where}: {p}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", type=Path, default=ROOT / "_build" / "html")
    ap.add_argument("--shots", type=Path, help="save a screenshot of every page here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each page's time")
    ap.add_argument("--only", nargs="*", default=[], help="check only pages whose path contains one of these")
    args = ap.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"FAIL: no built site at {args.site} (run `make book` first)")
        return 1
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        code = run(args.site, args.shots, args.only, args.verbose)
    except Skip as why:
        print(f"SKIP: browser check not run: {why}")
        return 0
    print(f"browser check {'passed' if code == 0 else 'FAILED'} in {time.monotonic() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
