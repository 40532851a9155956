"""report.html in a real browser (headless Chromium driven by selenium): a click on a confusion-matrix cell
shows that cell's images, and hostile file and class names stay text.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them these tests
skip, and fail where FEATCACHE_REQUIRE_REAL is set (CI installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from featcache.api import compare, extract, labels
from featcache.names import shown
from tests.support import REQUIRE_REAL, FakeBackbone, tiny_cache, write_image

ROOT = Path(__file__).resolve().parents[2]
BROWSER_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
#: a class folder ``x<`` and this file in it make the path ``test/x</script><img src=x onerror=...>.png``
TRAP = "script><img src=x onerror=document.title='pwned'>.png"
QUOTES = "\"'&<i>q"  # a class name and a file name of quotes, an ampersand and a tag
NOT_UTF8 = os.fsdecode(b"\xff\xfe.jpg")  # a file name whose bytes are not UTF-8: the page shows \xff\xfe.jpg


def _chromium_or_skip() -> tuple[str, str]:
    """Chromium and its driver, or a skip (a failure under FEATCACHE_REQUIRE_REAL) saying what is missing."""
    found = {"chromium": shutil.which("chromium"), "chromedriver": shutil.which("chromedriver")}
    try:
        import selenium  # noqa: F401
    except ImportError:
        found["selenium (pip)"] = None
    missing = [name for name, path in found.items() if path is None]
    if not missing:
        return found["chromium"], found["chromedriver"]
    message = f"{', '.join(missing)} not found (apt-get install chromium chromium-driver; pip install selenium)"
    if REQUIRE_REAL:
        pytest.fail(f"{message}, and FEATCACHE_REQUIRE_REAL is set")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium with a fresh profile, its console recorded, quit after the module's tests."""
    chromium, chromedriver = _chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver, page: Path) -> None:
    driver.get_log("browser")  # forget what an earlier page said
    driver.get(page.as_uri())


def _errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _test_paths(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in (data / "test").rglob("*") if p.is_file())


def _click_every_cell(driver, report: dict) -> dict[str, list[str]]:
    """Click each confusion-matrix cell: the images shown are as many as the cell says, their thumbnails
    loaded, under a heading that names the cell. Returns, per model, the paths of every image shown."""
    from selenium.webdriver.common.by import By

    names, judged = report["class_names"], report["significance"]["split"]
    seen = {}
    for model in report["models"]:
        matrix = report["models"][model]["evaluation"][judged]["confusion_matrix"]
        cells = driver.find_elements(By.XPATH, f"//h3[.='{model}']/following-sibling::table[1]//td")  # row by row
        assert [int(c.text) for c in cells] == [n for row in matrix for n in row]
        seen[model] = []
        for i, cell in enumerate(cells):
            t, p = divmod(i, len(names))
            cell.click()
            images = driver.find_elements(By.CSS_SELECTOR, "#shown img")
            assert len(images) == int(cell.text) == matrix[t][p]
            assert all(img.get_property("naturalWidth") > 0 for img in images)  # the thumbnail is drawn
            (heading,) = driver.find_elements(By.CSS_SELECTOR, "#shown b")
            captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#shown .thumb div")]
            assert captions == [img.get_attribute("title") for img in images]  # each image's path, as text
            assert driver.execute_script("return document.querySelectorAll('#shown *').length") == 2 + 3 * len(images)
            assert heading.text == f"{model}: true {names[t]}, predicted {names[p]} ({matrix[t][p]} image(s))"
            seen[model] += [img.get_attribute("title") for img in images]
    return seen


def _screenshot(driver, path: Path) -> Path:
    """The whole page as a PNG (the window made as tall as the page)."""
    height = driver.execute_script("window.scrollTo(0, 0); return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 100, 8000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path


def _hover_ringed_dots(driver) -> list[str]:
    """Point at each ringed dot of the map: the image and caption shown under it, for each dot. The map has
    a dot per image and draws the ringed ones last."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    captions = []
    for dot in driver.find_elements(By.CSS_SELECTOR, "#map circle.marked"):
        ActionChains(driver).move_to_element(dot).perform()
        (img,) = driver.find_elements(By.CSS_SELECTOR, "#hover img")
        assert img.get_property("naturalWidth") > 0 and img.get_attribute("src").startswith("data:image/jpeg")
        caption = driver.find_element(By.CSS_SELECTOR, "#hover div").text
        assert caption.startswith(img.get_attribute("alt"))  # its path, then its class and why it is ringed
        captions.append(caption)
    return captions


def _dots(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('#map circle').length")


def test_a_click_on_a_cell_shows_its_images_and_the_map_rings_mistakes_and_leaks(browser, tmp_path):
    cache = tiny_cache(tmp_path / "c", counts={"train": 8, "validation": 3, "test": 4})
    data = tmp_path / "c" / "data"
    shutil.copy(data / "train" / "cat" / "cat_000.jpg", data / "test" / "cat" / "copy of a train image.jpg")
    extract(data, cache, backbone=FakeBackbone())
    result = compare(cache, tmp_path / "out", epochs=2, drop_leaks=True)
    _open(browser, tmp_path / "out" / "report.html")
    assert browser.title == "featcache compare"
    seen = _click_every_cell(browser, result.report)
    leak = "test/cat/copy of a train image.jpg"
    for model, paths in seen.items():
        assert sorted(paths) == sorted(set(_test_paths(data)) - {leak}), model  # the leak is left out
    assert _dots(browser) == 9  # the 8 test images scored, and the leak
    captions = _hover_ringed_dots(browser)
    leak_caption = f"{leak} (cat): leak, left out of the scores"
    mistakes = [c for c in captions if c != leak_caption]
    accuracy = result.report["models"]["keras_head"]["evaluation"]["test"]["accuracy"]
    assert leak_caption in captions and len(mistakes) == round((1 - accuracy) * 8)
    assert all(c.endswith(": mistake of keras_head") for c in mistakes)
    _screenshot(browser, tmp_path / "report.png")
    assert _errors(browser) == []


def _hostile_dataset(root: Path) -> Path:
    """Two classes, ``x<`` (holding TRAP in its test folder) and QUOTES (holding ``QUOTES.jpg`` and NOT_UTF8)."""
    seed = 0
    for split, n in {"train": 8, "validation": 3, "test": 3}.items():
        for label, colour in (("x<", (200, 40, 40)), (QUOTES, (40, 40, 200))):
            for i in range(n):
                seed += 1
                write_image(root / split / label / f"{i}.jpg", colour, seed)
    write_image(root / "test" / "x<" / TRAP, (200, 40, 40), seed + 1)
    write_image(root / "test" / QUOTES / f"{QUOTES}.jpg", (40, 40, 200), seed + 2, fmt="JPEG")
    write_image(root / "test" / QUOTES / NOT_UTF8, (40, 40, 200), seed + 3, fmt="JPEG")
    return root


def test_hostile_names_are_shown_as_text_and_run_nothing(browser, tmp_path):
    from selenium.webdriver.common.by import By

    data = _hostile_dataset(tmp_path / "data <b>&'\"")
    cache = tmp_path / "cache <i>&'\"" / "features.h5"
    extract(data, cache, backbone=FakeBackbone())
    result = compare(cache, tmp_path / "out", epochs=2)
    _open(browser, tmp_path / "out" / "report.html")

    assert browser.title == "featcache compare"  # TRAP's onerror did not run
    count = "return document.querySelectorAll(arguments[0]).length"
    assert browser.execute_script(count, 'img[src="x"], img[onerror], [onclick]') == 0
    assert browser.execute_script(count, 'img[src]:not([src^="data:image/"])') == 0
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table th")]
    assert headers.count("x<") >= 2 and headers.count(QUOTES) >= 2  # row and column of each matrix
    page_text = browser.find_element(By.TAG_NAME, "body").text
    assert str(cache) in page_text and str(data) in page_text  # the cache path and its data_dir, as text

    seen = _click_every_cell(browser, result.report)
    paths = sorted(shown(p) for p in _test_paths(data))
    assert f"test/x</{TRAP}" in paths and f"test/{QUOTES}/{QUOTES}.jpg" in paths
    assert f"test/{QUOTES}/\\xff\\xfe.jpg" in paths
    for model, titles in seen.items():
        assert sorted(titles) == paths, model  # every name, character for character
    assert browser.title == "featcache compare" and browser.execute_script(count, "i") == 0  # no <i> made
    trap_cell = browser.find_elements(By.CSS_SELECTOR, "td.cell.diag")[result.report["class_names"].index("x<")]
    trap_cell.click()
    _screenshot(browser, tmp_path / "report.png")
    assert _errors(browser) == []


def test_the_labels_page_shows_the_likeliest_errors_and_rings_them_on_the_map(browser, tmp_path):
    from selenium.webdriver.common.by import By

    data = _hostile_dataset(tmp_path / "data")
    wrong = f"train/{QUOTES}/0.jpg"
    shutil.move(data / wrong, data / "train" / "x<" / "blue.jpg")  # a blue image in the red class
    cache = tmp_path / "features.h5"
    extract(data, cache, backbone=FakeBackbone())
    result = labels(cache, tmp_path / "labels", folds=3, baseline_c=1.0)
    _open(browser, tmp_path / "labels" / "report.html")

    assert (
        browser.title == "featcache labels"
        and browser.execute_script("return document.querySelectorAll('i').length") == 0
    )
    gallery = browser.find_elements(By.CSS_SELECTOR, ".gallery .thumb")
    assert len(gallery) == len(result.rows) == 16  # fewer rows than the gallery holds: all of them
    assert all(img.get_property("naturalWidth") > 0 for img in browser.find_elements(By.CSS_SELECTOR, ".gallery img"))
    first = gallery[0].text
    assert first.startswith("#1 x< ") and "→ " + QUOTES in first and "train/x</blue.jpg" in first
    assert _dots(browser) == 16
    captions = _hover_ringed_dots(browser)
    assert len(captions) == 16 and "train/x</blue.jpg (x<): likely label error" in captions
    shot = _screenshot(browser, tmp_path / "labels.png")
    assert shot.stat().st_size > 10_000 and _errors(browser) == []


def test_without_chromium_the_browser_tests_fail_when_required(tmp_path):
    environ = {**os.environ, "PATH": str(tmp_path), "FEATCACHE_REQUIRE_REAL": "1"}  # no chromium, no chromedriver
    args = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "click_on_a_cell"]
    strict = subprocess.run(args, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)
    assert strict.returncode == 1 and "FEATCACHE_REQUIRE_REAL is set" in strict.stdout, strict.stdout[-2000:]
    assert "chromium, chromedriver not found" in strict.stdout and "skipped" not in strict.stdout
