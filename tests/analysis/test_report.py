"""The report: every section on a synthetic study and on the tiny example; bad stores; browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import joulecast

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported
from joulecast.analysis.data import run_table, synthetic_store
from joulecast.analysis.report import build, key_results, write_html, write_md, write_tables

SECTIONS = [
    "Data and cleaning",
    "Architectures",
    "Training environments",
    "Estimation parameters",
    "Power stabilization",
    "Estimator accuracy",
]


def cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "joulecast", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    pytest.importorskip("matplotlib")
    path = tmp_path_factory.mktemp("syn") / "syn.db"
    synthetic_store(path, runs_per_group=8).close()
    return path


def test_report_states_the_built_in_difference(synthetic, tmp_path):
    with joulecast.open_store(synthetic) as store:
        report = build(store, figures_dir=tmp_path / "fig")
    assert [s.title for s in report.sections] == SECTIONS
    arch = report.sections[1]
    text = " ".join(arch.paragraphs)
    assert "J/image differs between architecture" in text and "p < 0.001" in text
    assert "B uses 40" in text or "B uses 39" in text  # 40% less energy per image than A
    cleaning = report.sections[0].paragraphs[0]
    assert "->" in cleaning
    data = report.sections[0]
    assert "plus one validation pass per finished epoch" in data.paragraphs[1]
    assert not any("no val_samples tag" in p for p in data.paragraphs)  # every run has it
    overview = dict(data.tables)["Runs kept, by group (medians)"]
    assert list(overview.columns) == [
        "architecture", "dataset", "environment", "runs", "j_per_image", "j_per_train_image",
        "s_per_image", "gpu_util_pct", "f1",
    ]  # fmt: skip
    # 2,000 training and 500 validation images an epoch: both columns, 0.8 apart.
    ratio = overview["j_per_image"] / overview["j_per_train_image"]
    assert ratio.to_numpy() == pytest.approx(0.8)
    a_cloud = overview.set_index(["architecture", "environment"]).loc[("A", "cloud")]
    assert a_cloud["j_per_train_image"] == pytest.approx(2.0 * 1.03 * 1.015, rel=0.03)
    html_path = write_html(report, tmp_path / "r.html")
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") >= 8 and "http://" not in page
    for title in SECTIONS:
        assert title in page
    md = write_md(report, tmp_path / "r.md")
    assert "![" in md.read_text() and (tmp_path / "r_figures").is_dir()
    tables = write_tables(report, tmp_path / "tables")
    assert len(tables) >= 5 and all(p.stat().st_size > 0 for p in tables)


def test_analyze_json_and_report_cli(synthetic, tmp_path):
    data = json.loads(cli("analyze", "--store", synthetic, "--json").stdout)
    assert data["runs"] > data["kept"] > 0
    summaries = [c["summary"] for c in data["comparisons"]]
    assert any("differs between architecture" in s for s in summaries)
    out = tmp_path / "report.html"
    proc = cli("report", "--store", synthetic, "-o", out, "--tables", tmp_path / "t")
    assert "6 sections" in proc.stdout and out.stat().st_size > 50_000
    bad = cli("report", "--store", synthetic, "-o", tmp_path / "no" / "r.html", check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_report_on_an_empty_store_and_missing_data(tmp_path):
    pytest.importorskip("matplotlib")
    empty = joulecast.open_store(tmp_path / "empty.db")
    report = build(empty, figures_dir=tmp_path / "f")
    assert "no runs" in report.sections[0].paragraphs[0]
    write_html(report, tmp_path / "e.html")
    assert key_results(empty)["runs"] == 0
    # One run, no tags, no F1: each section says what is missing.
    with joulecast.measure(store=empty, interval_s=0.05) as run, run.epoch(0, samples=10):
        pass
    report = build(empty, figures_dir=tmp_path / "g")
    text = " ".join(p for s in report.sections for p in s.paragraphs)
    assert "No run has a 'architecture' tag" in text
    assert "No run has 3 or more finished epochs" in text
    write_html(report, tmp_path / "one.html")


def test_report_says_which_runs_count_no_validation_images(tmp_path):
    pytest.importorskip("matplotlib")
    from joulecast.records import Phase, PhaseKind

    samples = pd.DataFrame({"t_s": [0.0, 10.0, 20.0], "device": "gpu:0", "power_w": 200.0,
                            "energy_j": None, "util_pct": None, "mem_used_mib": None,
                            "temp_c": None, "source": "test", "measured": True})  # fmt: skip
    phases = [Phase(PhaseKind.EPOCH, k, 10.0 * k, 10.0 * (k + 1), samples=100) for k in (0, 1)]
    with joulecast.open_store(tmp_path / "s.db") as store:
        for tags in ({"arch": "a", "val_samples": "25"}, {"arch": "b"}):
            store.import_run(samples=samples, phases=phases, tags=tags)
        report = build(store, figures_dir=tmp_path / "f")
    data = report.sections[0]
    assert "2 runs -> 2" in data.paragraphs[0]
    assert data.paragraphs[2] == (
        "1 of the 2 runs kept carry no val_samples tag: no validation image is counted for "
        "them, so their J/image is their J per training image."
    )
    # 4,000 J over 200 training images, and 50 validation images where the tag says so.
    overview = dict(data.tables)["Runs kept, by group (medians)"].set_index("architecture")
    assert overview["j_per_image"].to_dict() == pytest.approx({"a": 16.0, "b": 20.0})
    assert overview["j_per_train_image"].to_dict() == pytest.approx({"a": 20.0, "b": 20.0})


@pytest.mark.slow
@pytest.mark.timeout(900)  # eight Keras runs, made once per session
def test_report_on_the_tiny_example_study(tiny_study_store, tmp_path):
    pytest.importorskip("matplotlib")
    with joulecast.open_store(tiny_study_store) as s:
        report = build(s, study="tiny", figures_dir=tmp_path / "fig")
    assert [x.title for x in report.sections] == SECTIONS
    arch = " ".join(report.sections[1].paragraphs)
    assert "mobilenet_v2" in arch and "resnet50" in arch
    write_html(report, tmp_path / "tiny.html")


def _browser() -> tuple[str, str] | None:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


@pytest.mark.slow
def test_report_opens_in_headless_chromium(synthetic, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    found = _browser()
    if found is None:
        pytest.skip("chromium and chromedriver are not installed")
    chrome, driver_path = found
    out = tmp_path / "report.html"
    cli("report", "--store", synthetic, "-o", out)
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(out.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);"
        )
        assert len(images) >= 8
        assert all(complete and width > 0 for complete, width in images)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        titles = browser.execute_script(
            "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent);"
        )
        assert titles == SECTIONS
    finally:
        browser.quit()


HOSTILE = {
    "architecture": "<script>alert(1)</script>",
    "environment": "<img src=x onerror=alert(2)>",
    "link": "[click](javascript:alert(3))",
    "image": "![t](http://tracker.example/p.png)",
}


def _no_markup_survives(page: str, *, markdown: bool) -> None:
    """No tag of the hostile text is left raw, nor (in Markdown) a link or image it made."""
    lowered = page.lower()
    for raw in ("<script", "<img src=x", "onerror=alert(2)>"):
        assert raw not in lowered, raw
    if markdown:  # "\\]" is a bracket shown, not the end of a link text
        assert not re.search(r"(?<!\\)\]\((javascript|http)", page)


def test_user_text_is_escaped_in_markdown_and_html(tmp_path):
    from joulecast.analysis.report import Report, Section

    figure = tmp_path / "box.png"
    figure.write_bytes(b"\x89PNG")
    table = pd.DataFrame(
        {"architecture": list(HOSTILE.values()), HOSTILE["link"]: [1.0, 2.0, 3.0, 4.0]}
    )
    section = Section(
        f"By {HOSTILE['environment']}",
        [f"J/image differs between {HOSTILE['architecture']} and {HOSTILE['image']}", "1. x | y"],
        [(f"J/image by {HOSTILE['link']}", table)],
        [(f"J/image by {HOSTILE['environment']}", figure)],
    )
    report = Report(f"joulecast report: {HOSTILE['architecture']}", [section], tmp_path)
    md = write_md(report, tmp_path / "r (1).md").read_text()
    _no_markup_survives(md, markdown=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md  # shown as written
    assert "\\[click\\](javascript:alert(3))" in md and "1\\. x \\| y" in md
    assert "![J/image by &lt;img src=x onerror=alert(2)&gt;](r%20%281%29_figures/box.png)" in md
    _no_markup_survives(write_html(report, tmp_path / "r.html").read_text(), markdown=False)


@pytest.mark.slow
def test_tags_and_factor_values_are_escaped_in_a_built_report(tmp_path):
    pytest.importorskip("matplotlib")
    store = synthetic_store(
        tmp_path / "hostile.db", runs_per_group=3, samples_per_run=60, epochs=3, planted=False
    )
    names = {"A": HOSTILE["architecture"], "B": HOSTILE["link"], "C": "C"}
    names |= {"cloud": HOSTILE["environment"], "local": HOSTILE["image"]}
    for run_id, tags in zip(store.runs()["id"], store.runs()["tags"], strict=True):
        renamed = {"arch": names[tags["arch"]], "environment": names[tags["environment"]]}
        store.update_run(int(run_id), tags=renamed)
    report = build(store, figures_dir=tmp_path / "fig")
    store.close()
    md = write_md(report, tmp_path / "r.md").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    _no_markup_survives(md, markdown=True)
    _no_markup_survives(write_html(report, tmp_path / "r.html").read_text(), markdown=False)


def test_a_study_that_varies_the_power_limit_gets_energy_time_and_f1_against_it(tmp_path):
    pytest.importorskip("matplotlib")
    store = synthetic_store(
        tmp_path / "caps.db", runs_per_group=4, samples_per_run=60, epochs=3, planted=False
    )
    # The local runs use 1.17 times the energy per image of the cloud runs: give them the
    # higher limit, so the lower one saves about 1 - 1/1.17 = 14.5%.
    caps = {"cloud": "250", "local": "300"}
    for run_id, tags in zip(store.runs()["id"], store.runs()["tags"], strict=True):
        store.update_run(int(run_id), tags={"power_limit_w": caps[tags["environment"]]})
    report = build(store, figures_dir=tmp_path / "fig")
    table = run_table(store)
    store.close()
    (section,) = [s for s in report.sections if s.title == "GPU power limit"]
    assert "24 runs at 2 GPU power limits (250 W, 300 W)" in section.paragraphs[0]
    ((caption, frame),) = section.tables
    assert caption == "Energy, time and F1 by GPU power limit"
    assert list(frame["power_limit_w"]) == [250.0, 300.0] and list(frame["runs"]) == [12, 12]
    by_cap = table.groupby(table["environment"].map(caps).astype(float))
    for column in ("energy_j", "duration_s", "j_per_image", "f1"):
        assert list(frame[column]) == pytest.approx(list(by_cap[column].median()))
    assert frame["energy_change_pct"].iloc[-1] == 0
    saving = (1 - frame["j_per_image"].iloc[0] / frame["j_per_image"].iloc[1]) * 100
    assert saving == pytest.approx(100 - 100 / 1.17, abs=1.5)
    assert f"250 W uses {saving:.1f}% less energy per image than 300 W" in section.paragraphs[1]
    captions = [c for c, _ in section.figures]
    assert captions == [
        "energy (J) by GPU power limit",
        "duration (s) by GPU power limit",
        "F1 by GPU power limit",
    ]
    assert all(path.stat().st_size > 0 for _, path in section.figures)


def test_no_power_limit_section_where_the_runs_do_not_vary_it(synthetic, tmp_path):
    with joulecast.open_store(synthetic) as store:
        report = build(store, figures_dir=tmp_path / "fig")
    assert "GPU power limit" not in [s.title for s in report.sections]


def test_report_with_an_intensity_has_a_co2e_section(synthetic, tmp_path):
    from joulecast.carbon import fixed

    with joulecast.open_store(synthetic) as store:
        report = build(store, figures_dir=tmp_path / "fig", intensity=fixed(400.0), pue=1.5)
    assert [s.title for s in report.sections] == [*SECTIONS, "CO2e"]
    co2 = report.sections[-1]
    assert "PUE (1.5)" in co2.paragraphs[0] and "given value" in co2.paragraphs[0]
    tables = dict(co2.tables)
    runs = tables["CO2e by run"]
    assert len(runs) > 0
    assert runs["co2e_g"].tolist() == pytest.approx(
        (runs["energy_j"] / 3.6e6 * 1.5 * 400.0).tolist()
    )
    by_arch = tables["CO2e by architecture"]
    assert by_arch["co2e_g_total"].sum() == pytest.approx(runs["co2e_g"].sum())
    assert co2.figures[0][0] == "CO2e per run by architecture"
