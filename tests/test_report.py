"""The report, rendered without Quarto and checked in a real browser (headless Chromium)."""

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

# what each chapter must answer, found in its rendered page
ANSWERS = {
    "04_schedules": ["Q1: schedules", "Q2: where the model struggles"],
    "05_interpolation": ["Answer to Q3"],
    "06_gan": ["Training stability", "Sample quality", "Diversity", "Computational requirements", "Memorisation"],
    "07_cifar10": ["Comparison with MNIST"],
    "08_ddim": ["Speed.", "Quality.", "Number of steps and eta."],
}
EXPECTED_CHAPTERS = ["01_unet", "02_process", "03_train", "04_schedules", "05_interpolation", "06_gan", "07_cifar10",
                     "08_ddim"]


def reference_profile() -> str:
    """The profile the front page shows: gpu when its results are committed, else cpu."""
    return "gpu" if (ROOT / "results" / "gpu" / "03_train.ipynb").exists() else "cpu"


def chromium():
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from render_report import find_chromium

    exe = find_chromium()
    if exe is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but no Chromium was found")
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")
    return exe


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from render_report import render_plain

    exe = chromium()
    out = render_plain(reference_profile(), tmp_path_factory.mktemp("report"), pdf=True)
    return out, exe


def test_reference_profile_has_every_chapter():
    have = {p.stem for p in (ROOT / "results" / reference_profile()).glob("[0-9][0-9]_*.ipynb")}
    assert set(EXPECTED_CHAPTERS) <= have


def test_reference_results_are_not_stale():
    """Every reference chapter was executed with what it depends on as it is now (see tools/staleness.py)."""
    from staleness import stale_chapters

    profile = reference_profile()
    stale = stale_chapters(profile)
    assert not stale, f"re-execute these {profile} chapters: {stale} (tools/run_chapters.py --profile {profile} --only ...)"


@pytest.mark.slow
def test_every_page_in_a_real_browser(site):
    from playwright.sync_api import sync_playwright

    from render_report import CHROMIUM_FLAGS

    out, exe = site
    shots = ARTIFACTS / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    pages = sorted(out.glob("*.html"))
    assert {p.stem for p in pages} >= {"index", *EXPECTED_CHAPTERS}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=[a for a in CHROMIUM_FLAGS if a != "--headless"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for path in pages:
            page.goto(path.as_uri(), wait_until="load")
            assert page.title(), path.name
            text = page.inner_text("body")
            assert len(text) > 200, f"{path.name} is nearly empty"
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            assert not broken, f"{path.name}: images that did not load: {broken}"
            assert page.locator(".error").count() == 0, f"{path.name} shows an error output"
            assert "Traceback (most recent call last)" not in text, path.name
            assert page.locator(".claim-warning").count() == 0, \
                f"{path.name}: {page.locator('.claim-warning').first.inner_text()}"
            for needle in ANSWERS.get(path.stem, []):
                assert needle in text, f"{path.name} lacks its answer ({needle!r})"
            page.screenshot(path=str(shots / f"{path.stem}.png"), full_page=False)
        assert not errors, errors
        browser.close()
    assert len(list(shots.glob("*.png"))) == len(pages)


@pytest.mark.slow
def test_pdf_has_every_chapter(site):
    from pypdf import PdfReader

    out, _ = site
    reader = PdfReader(out / "report.pdf")
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in reader.pages)).replace("ﬀ", "ff")
    titles = re.findall(r"<title>(.*?) ·", " ".join((out / f"{c}.html").read_text()[:2000] for c in EXPECTED_CHAPTERS))
    assert len(titles) == len(EXPECTED_CHAPTERS)
    for t in titles:
        assert t.replace("&amp;", "&") in text, f"chapter {t!r} missing from the PDF"
    assert len(reader.pages) >= 2 * len(EXPECTED_CHAPTERS)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(out / "report.pdf", ARTIFACTS / "report.pdf")
