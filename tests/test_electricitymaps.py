"""The Electricity Maps lookup against a fake of its API on 127.0.0.1: hand-computed CO2e,
and one line for every way the lookup can fail (no network call leaves this machine)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from joulecast.carbon import REGION_ENV, ZONE_ENV, resolve_intensity, run_emissions
from joulecast.cli import main
from joulecast.electricitymaps import API_KEY_ENV, URL_ENV, ElectricityMaps, lookup
from joulecast.errors import InputError
from joulecast.store import Store
from tests.test_carbon import HOURLY, START, store_run

KEY = "s3cret-token"
# The stored run (tests/test_carbon.py) uses 0.05 kWh in the hour from 10:00 UTC and 0.1 kWh
# in the hour from 11:00; at 200 and 50 gCO2e/kWh: 0.05 x 200 + 0.1 x 50 = 15 g, a mean of
# 15 g / 0.15 kWh = 100 g/kWh.
TWO_HOURS = [
    {"zone": "DE", "carbonIntensity": 200, "datetime": "2026-01-05T10:00:00.000Z",
     "isEstimated": False, "emissionFactorType": "lifecycle"},
    {"zone": "DE", "carbonIntensity": 50.0, "datetime": "2026-01-05T11:00:00.000Z",
     "isEstimated": True, "emissionFactorType": "lifecycle"},
]  # fmt: skip
LATER = datetime(2026, 2, 1, tzinfo=timezone.utc).timestamp()  # the run is a month old


@dataclass
class FakeMaps:
    """Answers by path: (status, JSON-able body or bytes, headers); records each request."""

    url: str = ""
    routes: dict[str, tuple[int, Any, dict[str, str]]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    hold: threading.Event | None = None
    drip_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def answer(self, endpoint: str, body: Any, status: int = 200, **headers: str) -> None:
        self.routes[f"/v3/carbon-intensity/{endpoint}"] = (status, body, headers)

    def both(self, points: list[dict[str, Any]]) -> None:
        self.answer("past-range", {"zone": "DE", "data": points})
        self.answer("history", {"zone": "DE", "history": points})


@pytest.fixture
def maps() -> Iterator[FakeMaps]:
    fake = FakeMaps()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            fake.requests.append((url.path, query, {k.lower(): v for k, v in self.headers.items()}))
            if fake.hold is not None:
                fake.hold.wait(5)
            status, body, headers = fake.routes.get(url.path, (404, {"error": "no route"}, {}))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not fake.drip_s:
                self.wfile.write(data)
            for i in range(len(data) if fake.drip_s else 0):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                if fake.stop.wait(fake.drip_s):
                    return

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v3"
    try:
        yield fake
    finally:
        if fake.hold is not None:
            fake.hold.set()
        fake.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Store, int]:
    return store_run(tmp_path / "runs.db")


def source(maps: FakeMaps, now: float = LATER, **kw: Any) -> Any:
    from joulecast.carbon import Intensity

    em = ElectricityMaps("DE", KEY, maps.url, clock=lambda: now, **kw)
    return Intensity(em.source, lookup=em.history)


def test_co2e_from_a_two_hour_past_range(maps: FakeMaps, stored: tuple[Store, int]) -> None:
    maps.both(TWO_HOURS)
    e = run_emissions(*stored, source(maps), pue=1.2)
    assert e.co2e_g == pytest.approx(15.0 * 1.2)
    assert e.intensity_g_per_kwh == pytest.approx(100.0)
    assert e.intensity_source == "Electricity Maps zone DE, hourly history"
    ((path, query, headers),) = maps.requests
    assert path == "/v3/carbon-intensity/past-range"
    assert query == {"zone": "DE", "start": "2026-01-05T10:00:00Z", "end": "2026-01-05T12:00:00Z"}
    assert headers["auth-token"] == KEY


def test_a_run_of_the_last_day_reads_the_free_24_hour_history(
    maps: FakeMaps, stored: tuple[Store, int]
) -> None:
    maps.both(TWO_HOURS)
    e = run_emissions(*stored, source(maps, now=START + 3 * 3600))
    assert e.co2e_g == pytest.approx(15.0)
    assert [(p, q) for p, q, _ in maps.requests] == [
        ("/v3/carbon-intensity/history", {"zone": "DE"})
    ]


def test_a_run_longer_than_ten_days_takes_one_range_per_240_hours(maps: FakeMaps) -> None:
    maps.both([])
    first = START  # 10:30; 11 days later, 10:30
    ElectricityMaps("DE", KEY, maps.url, clock=lambda: LATER).history(first, first + 11 * 86400)
    spans = [(q["start"], q["end"]) for _, q, _ in maps.requests]
    assert spans == [
        ("2026-01-05T10:00:00Z", "2026-01-15T10:00:00Z"),
        ("2026-01-15T10:00:00Z", "2026-01-16T11:00:00Z"),
    ]


def test_no_key_is_one_line_naming_the_variable_and_nothing_is_fetched(maps: FakeMaps) -> None:
    with pytest.raises(InputError, match=f"zone DE: no API key: set \\${API_KEY_ENV}"):
        resolve_intensity(None, None, None, {URL_ENV: maps.url}, electricity_maps="DE")
    with pytest.raises(InputError, match=API_KEY_ENV):
        resolve_intensity(env={ZONE_ENV: "DE", API_KEY_ENV: "  "})
    assert maps.requests == []


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key(maps: FakeMaps, stored: tuple[Store, int], status: int) -> None:
    maps.answer("past-range", {"message": "Invalid auth-token"}, status=status)
    with pytest.raises(InputError) as info:
        run_emissions(*stored, source(maps))
    text = str(info.value)
    assert f"zone DE: past-range: HTTP {status} ('Invalid auth-token'): the key in" in text
    assert API_KEY_ENV in text and KEY not in text and "\n" not in text


def test_a_zone_the_service_rejects(maps: FakeMaps, stored: tuple[Store, int]) -> None:
    maps.answer("past-range", {"error": "Zone 'XX' does not exist"}, status=404)
    with pytest.raises(InputError, match=r"HTTP 404 \(\"Zone 'XX' does not exist\"\): the zone"):
        run_emissions(*stored, source(maps))
    maps.answer("past-range", b"<html>busy</html>", status=503)
    with pytest.raises(InputError, match=r"zone DE: past-range: HTTP 503$"):
        run_emissions(*stored, source(maps))


def point(**change: Any) -> dict[str, Any]:
    return {**TWO_HOURS[0], **change}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "not JSON: b'{not json'"),
        ({"zone": "DE"}, "no list 'data' in the answer$"),
        ({"data": {"carbonIntensity": 1}}, "no list 'data'"),
        ([1, 2], "no list 'data'"),
        ({"data": [7]}, r"data\[0\]: 7: expected an object"),
        ({"data": [{"datetime": "2026-01-05T10:00:00Z"}]}, r"data\[0\]: no field carbonIntensity"),
        ({"data": [point(carbonIntensity="abc")]}, r"data\[0\].carbonIntensity 'abc': expected"),
        ({"data": [point(carbonIntensity=-1)]}, r"data\[0\].carbonIntensity -1: expected"),
        (
            {"data": [point(carbonIntensity=1e9)]},
            r"data\[0\].carbonIntensity 1000000000.0: .* to 5000$",
        ),
        ({"data": [point(carbonIntensity=True)]}, r"data\[0\].carbonIntensity True: expected"),
        ({"data": [point(carbonIntensity=[1])]}, r"data\[0\].carbonIntensity \[1\]: expected"),
        ({"data": [point(datetime="yesterday")]}, r"data\[0\].datetime 'yesterday': expected"),
        (
            {"data": [point(datetime="2026-01-05T10:00:00")]},
            r"data\[0\].datetime '2026-01-05T10:00:00': expected",
        ),
        ({"data": [point(datetime=None)]}, r"data\[0\].datetime None"),
        (b"[" * 200_000, r"not JSON: b'\[\[\["),  # nested past the interpreter's recursion
        (
            b'{"data": [{"datetime": "2026-01-05T10:00Z", "carbonIntensity": 1'
            + b"0" * 400
            + b"}]}",
            r"data\[0\].carbonIntensity 10{56}...: expected",
        ),  # an integer beyond any float
    ],
)
def test_a_malformed_answer_names_the_field(
    maps: FakeMaps, stored: tuple[Store, int], body: Any, named: str
) -> None:
    maps.answer("past-range", body)
    with pytest.raises(InputError, match=f"^Electricity Maps zone DE: past-range: {named}"):
        run_emissions(*stored, source(maps))


def test_nan_is_not_json_a_number(maps: FakeMaps, stored: tuple[Store, int]) -> None:
    maps.answer(
        "past-range", b'{"data": [{"datetime": "2026-01-05T10:00Z", "carbonIntensity": NaN}]}'
    )
    with pytest.raises(InputError, match="carbonIntensity nan: expected a number"):
        run_emissions(*stored, source(maps))


@pytest.mark.parametrize("points", [TWO_HOURS[:1], [TWO_HOURS[0], point(carbonIntensity=None,
                         datetime="2026-01-05T11:00:00Z")]])  # fmt: skip
def test_a_history_that_does_not_cover_the_run_names_the_hours(
    maps: FakeMaps, stored: tuple[Store, int], points: list[dict[str, Any]]
) -> None:
    maps.answer("past-range", {"data": points})
    with pytest.raises(InputError) as info:
        run_emissions(*stored, source(maps))
    assert str(info.value) == (
        "Electricity Maps zone DE, hourly history: does not cover the run's readings from"
        " 2026-01-05 11:00:00 UTC to 2026-01-05 12:00:00 UTC (the run ran 2026-01-05 10:30:00"
        " UTC to 2026-01-05 12:00:00 UTC): the service has no value for those hours; give"
        " --intensity-csv or --region"
    )


def test_no_network(stored: tuple[Store, int]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    em = ElectricityMaps("DE", KEY, f"http://127.0.0.1:{port}/v3", clock=lambda: LATER)
    with pytest.raises(InputError, match=f"zone DE: cannot reach http://127.0.0.1:{port}/v3: "):
        em.history(START, START + 60)


def test_a_silent_service_times_out(maps: FakeMaps) -> None:
    maps.hold = threading.Event()
    em = ElectricityMaps("DE", KEY, maps.url, timeout_s=0.2, clock=lambda: LATER)
    with pytest.raises(InputError, match=r"zone DE: .*0\.2"):
        em.history(START, START + 60)


def test_a_command_over_many_runs_asks_each_question_once_and_waits_out_one_timeout(
    maps: FakeMaps,
) -> None:
    maps.both(TWO_HOURS)
    recent = ElectricityMaps("DE", KEY, maps.url, clock=lambda: START + 7200)
    first, second = recent.history(START, START + 60), recent.history(START + 600, START + 900)
    assert first == second and len(maps.requests) == 1  # the 24-hour history, asked once
    maps.hold = threading.Event()
    silent = ElectricityMaps("DE", KEY, maps.url, timeout_s=0.2, clock=lambda: LATER)
    for hour in range(3):  # three runs, three different past ranges: one wait
        with pytest.raises(InputError, match=r"no answer within 0\.2 s"):
            silent.history(START + hour * 3600, START + hour * 3600 + 60)
    assert len(maps.requests) == 2


def test_the_key_does_not_follow_a_redirect(maps: FakeMaps) -> None:
    maps.answer("past-range", b"", status=302, Location=maps.url + "/carbon-intensity/moved")
    maps.answer("moved", {"data": TWO_HOURS})
    em = ElectricityMaps("DE", KEY, maps.url, clock=lambda: LATER)
    assert em.history(START, START + 60).series[0][2] == 200.0
    (_, _, first), (_, _, second) = maps.requests
    assert first["auth-token"] == KEY and "auth-token" not in second
    assert KEY not in repr(em) and KEY not in repr(lookup("DE", {API_KEY_ENV: KEY}))


@pytest.mark.parametrize("zone", ["DE&zone=FR", "", "../zones", "D E", "DE\x1b[2J", "-DE"])
def test_a_zone_that_is_not_an_id_is_refused_before_any_request(zone: str) -> None:
    with pytest.raises(InputError, match="expected a zone id such as DE"):
        lookup(zone, {API_KEY_ENV: KEY})


@pytest.mark.parametrize("url", ["file:///etc", "http://[::1/v3", "http://", "http://h:port/v3"])
def test_the_base_url_must_be_http(url: str) -> None:
    with pytest.raises(InputError, match=f"\\${URL_ENV} '.*': expected an http"):
        lookup("DE", {API_KEY_ENV: KEY, URL_ENV: url})


@pytest.mark.parametrize("key", ["abc\ndef", "abc def", "clé", "abc\x1b[2J"])
def test_a_key_no_header_can_carry_is_refused_without_printing_it(key: str) -> None:
    with pytest.raises(InputError) as info:
        lookup("DE", {API_KEY_ENV: key})
    assert str(info.value).startswith(f"Electricity Maps zone DE: ${API_KEY_ENV} holds a space")
    assert key.split()[0][:3] not in str(info.value).split("holds")[1]


def test_a_key_longer_than_any_token_is_refused_by_its_length() -> None:
    with pytest.raises(InputError, match=r"API_KEY is 100,000 characters long, more than any"):
        lookup("DE", {API_KEY_ENV: "k" * 100_000})


def test_a_service_that_drips_its_answer_is_given_the_timeout_in_all(maps: FakeMaps) -> None:
    maps.drip_s = 0.1  # a byte every 0.1 s, each read inside the socket's 0.3 s timeout
    maps.answer("past-range", {"data": TWO_HOURS})
    em = ElectricityMaps("DE", KEY, maps.url, timeout_s=0.3, clock=lambda: LATER)
    with pytest.raises(InputError, match=r"zone DE: past-range: no answer within 0\.3 s"):
        em.history(START, START + 60)


def test_resolution_order(tmp_path: Path) -> None:
    (tmp_path / "ci.csv").write_text(HOURLY)
    env = {API_KEY_ENV: KEY, ZONE_ENV: "FR", REGION_ENV: "SWE"}
    csv = resolve_intensity(None, tmp_path / "ci.csv", "FRA", env, electricity_maps="DE")
    assert csv is not None and csv.source == "hourly file ci.csv"
    zone = resolve_intensity(None, None, "FRA", env, electricity_maps="DE")
    assert zone is not None and zone.source == "Electricity Maps zone DE, hourly history"
    from_env = resolve_intensity(None, None, None, env)
    assert from_env is not None and "zone FR" in from_env.source and from_env.lookup is not None
    assert resolve_intensity(None, None, None, {**env, "JOULECAST_INTENSITY": "7"}).g_per_kwh == 7


# -- the verbs -----------------------------------------------------------------------------


@pytest.fixture
def cli_env(maps: FakeMaps, monkeypatch: pytest.MonkeyPatch) -> FakeMaps:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(URL_ENV, maps.url)
    return maps


def test_show_json(
    cli_env: FakeMaps,
    stored: tuple[Store, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env.both(TWO_HOURS)  # either endpoint, whatever the date today
    argv = ["show", "r", "--store", str(tmp_path / "runs.db"), "--electricity-maps", "DE"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["co2e_g"] == pytest.approx(15.0) and data["intensity_g_per_kwh"] == 100.0
    assert data["intensity_source"] == "Electricity Maps zone DE, hourly history"
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "CO2e: 15.00 g at 100.0 gCO2e/kWh (Electricity Maps zone DE, hourly history)" in out


@pytest.mark.parametrize("case", ["no key", "401", "malformed", "uncovered"])
def test_show_fails_in_one_line(
    cli_env: FakeMaps,
    stored: tuple[Store, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    expected = {
        "no key": f"no API key: set ${API_KEY_ENV}",
        "401": "HTTP 401",
        "malformed": "carbonIntensity 'high'",
        "uncovered": "does not cover the run's readings from 2026-01-05 11:00:00 UTC",
    }[case]
    if case == "no key":
        monkeypatch.delenv(API_KEY_ENV)
    for endpoint in ("past-range", "history"):
        key = "data" if endpoint == "past-range" else "history"
        if case == "401":
            cli_env.answer(endpoint, {"message": "bad token"}, status=401)
        elif case == "malformed":
            cli_env.answer(endpoint, {key: [point(carbonIntensity="high")]})
        else:
            cli_env.answer(endpoint, {key: TWO_HOURS[:1]})
    argv = ["show", "r", "--store", str(tmp_path / "runs.db"), "--json"]
    assert main([*argv, "--electricity-maps", "DE"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("joulecast: error: Electricity Maps zone DE") and expected in line
    assert KEY not in captured.err and "Traceback" not in captured.err
    if case == "no key":
        assert cli_env.requests == []


def test_measure_without_a_key_is_refused_before_the_command_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    marker = tmp_path / "ran"
    argv = ["measure", "--no-gpu", "--store", str(tmp_path / "m.db"), "--electricity-maps"]
    argv += ["DE", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    assert main(argv) == 2
    assert not marker.exists() and API_KEY_ENV in capsys.readouterr().err
