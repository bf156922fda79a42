from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

import joulecast
from joulecast.errors import InputError, JoulecastWarning
from joulecast.prometheus import Family, exposition, parse_listen
from joulecast.sensors.replay import ReplaySensor
from joulecast.store import Store

JOULECAST = [sys.executable, "-m", "joulecast"]
DASHBOARD = (
    Path(__file__).resolve().parents[1] / "examples" / "grafana" / "joulecast-dashboard.json"
)
TRACE = "t_s,gpu_index,power_w\n0,0,100\n1,0,100\n"  # a replayed GPU at 100 W
# Marks two epochs in the run of joulecast measure, then waits for the test's word.
CHILD = """
    import pathlib, sys, time
    import joulecast
    go = pathlib.Path(sys.argv[1])
    with joulecast.measure() as run:
        for i in range(2):
            time.sleep(0.2)
            run.mark_epoch(i, samples=10)
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
"""
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of a text exposition by metric name: a reader of the format, not of our code."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        found = {
            k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for k, v in _LABEL.findall(labels or "")
        }
        out.setdefault(name, []).append((found, float(value)))
    return out


def one(samples: dict, name: str) -> float:
    (only,) = samples[name]
    return only[1]


def by_device(samples: dict, name: str) -> dict[str, float]:
    return {labels["device"]: value for labels, value in samples[name]}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def poll(read, done, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        got = read()
        if done(got):
            return got
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s; last: {got!r}"
        time.sleep(0.1)


# -- the address and the format ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        (9100, ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_listen_address_defaults_to_this_machine_alone(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected \\[ADDR:\\]PORT"),
        ("host:", "expected \\[ADDR:\\]PORT"),
        ("nine", "expected \\[ADDR:\\]PORT"),
        ("::1:9100", "an IPv6 address goes in brackets"),
        ("[::1]9100", "expected \\[ADDR:\\]PORT"),
        ("70000", "port: .*70000.*expected a whole number from 0 to 65535"),
        (-1, "port: .*-1.*expected a whole number from 0 to 65535"),
    ],
)
def test_a_bad_listen_address_says_what_was_expected(text, message):
    with pytest.raises(InputError, match="^--prometheus.*" + message):
        parse_listen(text)


def test_exposition_escapes_label_values_and_writes_special_numbers():
    family = Family("x_total", "counter", "a \\ help\nline", [({"name": 'a"b\\c\nd'}, 1.5)])
    gauge = Family("g", "gauge", "g", [({"k": "1"}, math.nan), ({"k": "2"}, -math.inf)])
    text = exposition([family, Family("empty", "gauge", "left out"), gauge])
    assert text == (
        "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\n"
        'x_total{name="a\\"b\\\\c\\nd"} 1.5\n'
        '# HELP g g\n# TYPE g gauge\ng{k="1"} NaN\ng{k="2"} -Inf\n'
    )
    assert parse(text)["x_total"] == [({"name": 'a"b\\c\nd'}, 1.5)]
    parser = pytest.importorskip("prometheus_client.parser")  # an independent reader agrees
    (counter, read_gauge) = parser.text_string_to_metric_families(text)
    assert (counter.name, counter.type, counter.samples[0].labels) == (
        "x",
        "counter",
        {"name": 'a"b\\c\nd'},
    )
    assert read_gauge.type == "gauge" and read_gauge.samples[1].value == -math.inf


# -- joulecast measure --prometheus ------------------------------------------------------


def test_a_scrape_during_joulecast_measure_agrees_with_the_store(tmp_path):
    (tmp_path / "trace.csv").write_text(TRACE)
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    store_path, go = tmp_path / "s.db", tmp_path / "go"
    proc = subprocess.Popen(
        [
            *JOULECAST,
            "measure",
            "--store",
            str(store_path),
            "--replay-gpus",
            str(tmp_path / "trace.csv"),
            "--epochs",
            "3",
            "--interval",
            "0.05",
            "--prometheus",
            "127.0.0.1:0",  # a free port, printed
            "--",
            sys.executable,
            str(tmp_path / "child.py"),
            str(go),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        url = re.fullmatch(r"joulecast: metrics at (http://127\.0\.0\.1:\d+/metrics)\n", first)
        assert url, first
        text = poll(
            lambda: scrape(url.group(1)),
            lambda t: (
                "joulecast_epochs_completed{" in t
                and one(parse(t), "joulecast_epochs_completed") == 2
                and "joulecast_forecast_energy_joules{" in t
            ),
            "second epoch and forecast",
        )
    finally:
        go.touch()
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    samples = parse(text)
    with Store(store_path) as store:
        ((run_id, host),) = store.runs()[["id", "host"]].itertuples(index=False)
        labels = {(lab["run"], lab["host"]) for fam in samples.values() for lab, _ in fam}
        assert labels == {(str(run_id), host)} and host == socket.gethostname()
        # Each device's counter is the store's energy at the reading it was read with.
        energy = by_device(samples, "joulecast_energy_joules_total")
        seen = by_device(samples, "joulecast_reading_time_seconds")
        assert "gpu:0" in energy and set(energy) <= set(store.device_energy(run_id))
        for device, value in energy.items():
            stored = store.energy_at(run_id, [seen[device]], devices=[device])[device][0]
            assert value == pytest.approx(stored, rel=1e-9, abs=1e-9), device
        assert one(samples, "joulecast_run_energy_joules_total") == pytest.approx(
            sum(energy.values())
        )
        origins = {lab["device"]: lab["origin"] for lab, _ in samples["joulecast_power_watts"]}
        assert origins["gpu:0"] == "replayed" and by_device(samples, "joulecast_power_watts")[
            "gpu:0"
        ] == pytest.approx(100.0)
        assert set(by_device(samples, "joulecast_device_up").values()) == {1.0}
        assert one(samples, "joulecast_run_active") == 1.0
        # The epoch and the forecast are the ones stored with the run's epochs.
        epochs = store.phases(run_id, "epoch")
        assert one(samples, "joulecast_epoch") == 1.0 and epochs["index"].tolist() == [0, 1]
        forecasts = [m["forecast"] for m in epochs["metrics"]]
        total = one(samples, "joulecast_forecast_energy_joules")
        assert total in [f["total_j"] for f in forecasts]
        (made,) = [f for f in forecasts if f["total_j"] == total]
        assert one(samples, "joulecast_forecast_remaining_joules") == made["remaining_j"]
        assert one(samples, "joulecast_epochs_planned") == 3.0
        assert one(samples, "joulecast_sampling_interval_seconds") == 0.05


def test_a_port_in_use_is_one_line_and_exit_2_with_nothing_measured(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        store = tmp_path / "s.db"
        proc = subprocess.run(
            [
                *JOULECAST,
                "measure",
                "--store",
                str(store),
                "--no-gpu",
                "--prometheus",
                f":{port}",
                "--",
                sys.executable,
                "-c",
                f"open({str(tmp_path / 'ran')!r}, 'w')",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"joulecast: error: --prometheus :{port}: port {port} is in use on 127.0.0.1"
        " (another run's exporter?); choose another port\n"
    )
    assert not (tmp_path / "ran").exists() and not store.exists()


def test_a_textfile_in_a_missing_folder_is_refused_before_the_run(tmp_path):
    target = tmp_path / "nowhere" / "j.prom"
    with pytest.raises(InputError, match=r"^--prometheus-textfile: .*nowhere.* does not exist"):
        joulecast.measure_command(
            [sys.executable, "-c", "pass"],
            store=tmp_path / "s.db",
            sensors=[],
            prometheus_textfile=target,
        )
    assert not (tmp_path / "s.db").exists()


# -- the Python API ----------------------------------------------------------------------


def _replay(power_w: float = 100.0) -> ReplaySensor:
    trace = pd.DataFrame({"t_s": [0.0, 1.0], "device": "gpu:0", "power_w": power_w})
    return ReplaySensor(trace, loop=True)


def test_the_textfile_is_replaced_whole_and_keeps_the_runs_final_figures(tmp_path):
    target = tmp_path / "joulecast.prom"
    reads: list[str] = []
    stop = threading.Event()

    def read_all_the_time() -> None:  # a collector reading while the file is rewritten
        while not stop.is_set():
            if target.exists():
                reads.append(target.read_text())
            time.sleep(0.002)

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        with joulecast.measure(
            "api",
            store=tmp_path / "s.db",
            sensors=[_replay()],
            interval_s=0.02,
            prometheus_textfile=target,
        ) as run:
            with run.epoch(0, samples=4):
                poll(lambda: reads[-1] if reads else "", lambda t: "{" in t, "a first file")
            run.live_forecast(3, progress=False)
            with run.epoch(1, samples=4):
                time.sleep(0.3)
            poll(
                lambda: target.read_text(),
                lambda t: "joulecast_forecast_energy_joules{" in t,
                "the forecast in the file",
                timeout_s=30,
            )
    finally:
        stop.set()
        reader.join()
    # Every read saw a whole file: each parses, and holds the last family of a refresh.
    assert reads and all("joulecast_exporter_errors_total" in parse(t) for t in reads)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    final = parse(target.read_text())
    summary = run.summary()
    assert one(final, "joulecast_run_active") == 0.0
    assert by_device(final, "joulecast_energy_joules_total")["gpu:0"] == pytest.approx(
        summary.devices["gpu:0"].energy_j, rel=1e-12
    )
    assert one(final, "joulecast_run_energy_joules_total") == pytest.approx(summary.energy_j)
    assert one(final, "joulecast_epoch") == 1.0
    assert one(final, "joulecast_epochs_completed") == 2.0
    stored = run.store.phases(run.run_id, "epoch")["metrics"].iloc[-1]["forecast"]
    assert one(final, "joulecast_forecast_energy_joules") == stored["total_j"]
    # The Grafana dashboard asks only for series the exporter writes.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    asked = {name for expr in exprs for name in re.findall(r"joulecast_\w+", expr)}
    assert asked and asked <= set(final), asked - set(final)


def test_the_api_serves_a_run_measuring_itself(tmp_path):
    with joulecast.measure(
        store=tmp_path / "s.db", sensors=[_replay(40.0)], interval_s=0.02, prometheus=0
    ) as run:
        exporter = run.exporter
        assert exporter is not None and exporter.url is not None
        text = poll(
            lambda: scrape(exporter.url),
            lambda t: "joulecast_power_watts{" in t,
            "a power reading",
        )
    assert by_device(parse(text), "joulecast_power_watts") == {"gpu:0": 40.0}
    with pytest.raises(OSError):  # stopped with the run
        urllib.request.urlopen(exporter.url, timeout=5)


def test_a_port_in_use_does_not_stop_a_training_measuring_itself(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.warns(JoulecastWarning, match=f"port {port} is in use.*without Prometheus"),
            joulecast.measure(
                store=tmp_path / "s.db", sensors=[_replay()], interval_s=0.02, prometheus=port
            ) as run,
        ):
            run.mark_epoch(0)
    assert run.summary().status == "completed"
    with pytest.raises(InputError, match="prometheus: 'x:y'"):  # a malformed one still raises
        joulecast.measure(store=tmp_path / "s.db", sensors=[], prometheus="x:y").start()


def test_an_exporter_failing_never_stops_the_measurement(tmp_path, caplog, monkeypatch):
    target = tmp_path / "out" / "j.prom"
    target.parent.mkdir()
    with joulecast.measure(
        store=tmp_path / "s.db", sensors=[_replay()], interval_s=0.02, prometheus_textfile=target
    ) as run:
        exporter = run.exporter
        assert exporter is not None
        poll(lambda: target.exists(), bool, "the file")
        target.unlink()
        target.parent.rmdir()  # the collector's folder goes away mid-run
        poll(lambda: exporter.refresh_errors, lambda n: n >= 1, "a failed write")

        def unreadable(run_id):
            raise joulecast.StoreError("database is locked")

        # and the store cannot be read for a moment
        monkeypatch.setattr(run.store, "device_energy", unreadable)
        poll(lambda: exporter.refresh_errors, lambda n: n >= 3, "failed reads")
        monkeypatch.undo()
        run.mark_epoch(0)
    assert run.summary().status == "completed" and not target.exists()
    failures = [r.getMessage() for r in caplog.records if "Prometheus metrics" in r.getMessage()]
    assert len(failures) == 2 and "writing" in failures[0] and "locked" in failures[1]


def test_importing_joulecast_loads_no_exporter():
    code = (
        "import sys, joulecast; joulecast.measure; joulecast.MeasuredCommand;"
        " print(sorted(m for m in sys.modules if m.startswith(('prometheus', 'http.server',"
        " 'joulecast.prometheus'))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"
