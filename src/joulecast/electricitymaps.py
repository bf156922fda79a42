"""Hourly carbon intensity from Electricity Maps, fetched only when asked (docs/carbon.md).

Two endpoints of its API (v3), each with the token in the header ``auth-token``:

- ``GET {base}/carbon-intensity/history?zone=Z``: the last 24 hours, in every plan (free
  personal keys included), answered as ``{"zone": Z, "history": [point, ...]}``;
- ``GET {base}/carbon-intensity/past-range?zone=Z&start=ISO&end=ISO``: any past span of at
  most 10 days (240 hours) at hourly granularity, in commercial plans, answered as
  ``{"zone": Z, "data": [point, ...]}``;

where a point is ``{"datetime": ISO, "carbonIntensity": gCO2eq/kWh, ...}`` for the hour from
``datetime``. A run that began less than :data:`RECENT_S` ago is looked up in the history, an
older one in past ranges of at most :data:`MAX_RANGE_S` each. Nothing here runs at import
time or without a zone given: the lookup is made for each run, by
:func:`joulecast.carbon.run_emissions`.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from joulecast.carbon import MAX_G_PER_KWH, Intensity, hourly_series
from joulecast.errors import InputError
from joulecast.inputs import iso_time, quote

if TYPE_CHECKING:
    import urllib.error

#: Where the API token is read from.
API_KEY_ENV = "ELECTRICITYMAPS_API_KEY"
#: Another API base URL (a proxy, a test server); the default is :data:`BASE_URL`.
URL_ENV = "JOULECAST_ELECTRICITY_MAPS_URL"
BASE_URL = "https://api.electricitymaps.com/v3"
#: Seconds to wait for an answer.
TIMEOUT_S = 30.0
#: The longest span one past-range request covers at hourly granularity (240 hours).
MAX_RANGE_S = 240 * 3600.0
#: A run that began within this long before now is read from the 24-hour history (a margin
#: of an hour for the latest point, which may not be published yet).
RECENT_S = 23 * 3600.0
#: The longest answer read (240 hourly points take about 60 kB).
MAX_BYTES = 8 << 20
# The key under which ElectricityMaps._asked keeps a failure to reach the service.
_UNREACHED = ""
# API tokens: visible ASCII characters only (a header cannot carry others).
_MAX_TOKEN = 4096
_TOKEN = re.compile(rf"[\x21-\x7e]{{1,{_MAX_TOKEN}}}")
# Zone ids: letters, digits, '-' and '_' (DE, US-CAL-CISO, DK-DK1).
_ZONE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ElectricityMaps:
    """The hourly history of one Electricity Maps zone, fetched with one API key.

    Attributes:
        zone: The zone id (``DE``, ``FR``, ``US-CAL-CISO``).
        key: The API token (never printed: not in the repr, nor in any message).
        base_url: The API base, up to and including ``/v3``.
        timeout_s: Seconds to wait for each answer.
        clock: UNIX time now, which decides between history and past range.
    """

    zone: str
    key: str = field(repr=False)
    base_url: str = BASE_URL
    timeout_s: float = TIMEOUT_S
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    # Every answer and refusal by request, and the first failure to reach the service: a
    # command over many runs asks each question once, and waits out one timeout at most.
    _asked: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def source(self) -> str:
        """Where the intensity comes from, in words."""
        return f"Electricity Maps zone {self.zone}, hourly history"

    def history(self, first_s: float, last_s: float) -> Intensity:
        """The hourly intensity from the hour of ``first_s`` to ``last_s`` (UNIX seconds), as
        :attr:`Intensity.series`; hours the service has no value for are left out (so
        :func:`joulecast.carbon.run_emissions` names them).

        Raises:
            InputError: the service cannot be reached, refuses the key or the zone, or
                answers with something other than the documented JSON (named by field).
        """
        start = math.floor(first_s / 3600.0) * 3600.0
        rows: dict[float, float] = {}
        if self.clock() - start < RECENT_S:
            rows.update(self._points("history", {}, "history"))
        else:
            end = math.ceil(last_s / 3600.0) * 3600.0
            while start < end:
                stop = min(start + MAX_RANGE_S, end)
                query = {"start": _iso(start), "end": _iso(stop)}
                rows.update(self._points("past-range", query, "data"))
                start = stop
        return Intensity(self.source, series=hourly_series(rows))

    def _points(self, endpoint: str, query: dict[str, str], key: str) -> dict[float, float]:
        answer = self._get(endpoint, query)
        points = answer.get(key) if isinstance(answer, dict) else None
        if not isinstance(points, list):
            raise self._error(f"{endpoint}: no list {quote(key)} in the answer")
        rows: dict[float, float] = {}
        for i, point in enumerate(points):
            where = f"{endpoint}: {key}[{i}]"
            if not isinstance(point, dict):
                raise self._error(f"{where}: {quote(point)}: expected an object")
            if "carbonIntensity" not in point:
                raise self._error(f"{where}: no field carbonIntensity")
            g = point["carbonIntensity"]
            if g is None:  # an hour the service has no value for: a gap, not a zero
                continue
            if not _is_g_per_kwh(g):
                raise self._error(
                    f"{where}.carbonIntensity {quote(g)}: expected a number of gCO2e/kWh"
                    f" from 0 to {MAX_G_PER_KWH:g}"
                )
            rows[_when(point.get("datetime"), f"{where}.datetime", self)] = float(g)
        return rows

    def _get(self, endpoint: str, query: dict[str, str]) -> Any:
        params = urllib.parse.urlencode({"zone": self.zone, **query})
        url = f"{self.base_url.rstrip('/')}/carbon-intensity/{endpoint}?{params}"
        for asked in (_UNREACHED, url):
            if asked in self._asked:
                if isinstance(self._asked[asked], InputError):
                    raise self._asked[asked]
                return self._asked[asked]
        try:
            self._asked[url] = self._within_timeout(endpoint, url)
        except InputError as exc:
            self._asked.setdefault(url, exc)
            raise
        return self._asked[url]

    def _within_timeout(self, endpoint: str, url: str) -> Any:
        """:meth:`_fetch` in a thread given :attr:`timeout_s` in all: the socket's timeout
        bounds each read, and a service that drips its answer would be waited on for ever."""
        import threading

        outcome: list[tuple[bool, Any]] = []

        def fetch() -> None:
            try:
                outcome.append((True, self._fetch(endpoint, url)))
            except BaseException as exc:  # handed to the waiting thread, raised there
                outcome.append((False, exc))

        worker = threading.Thread(target=fetch, name="joulecast-electricity-maps", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if not outcome:
            raise self._unreached(f"{endpoint}: no answer within {self.timeout_s:g} s")
        done, value = outcome[0]
        if done:
            return value
        if isinstance(value, InputError):
            raise value
        # Anything else the standard library raised: named by type only, as its text may hold
        # the request (and so the key).
        raise self._error(f"{endpoint}: the request failed ({type(value).__name__})")

    def _fetch(self, endpoint: str, url: str) -> Any:
        import http.client  # the HTTP client only where a lookup is made
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        request.add_unredirected_header("auth-token", self.key)  # not sent on to a redirect
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise self._refused(endpoint, exc) from None
        except urllib.error.URLError as exc:
            raise self._unreached(f"cannot reach {self.base_url}: {exc.reason}") from None
        except TimeoutError:
            raise self._unreached(f"{endpoint}: no answer within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreached(f"{endpoint}: the connection failed: {exc!r}") from None
        if len(body) > MAX_BYTES:
            raise self._error(f"{endpoint}: an answer over {MAX_BYTES >> 20} MiB")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise self._error(f"{endpoint}: not JSON: {quote(body[:60])}") from None

    def _refused(self, endpoint: str, exc: urllib.error.HTTPError) -> InputError:
        said = _message(exc)
        if exc.code in (401, 403):
            return self._error(
                f"{endpoint}: HTTP {exc.code}{said}: the key in ${API_KEY_ENV} was refused"
                " (free personal keys reach only the last 24 hours; runs older than that need"
                " a plan with past-range)"
            )
        if exc.code in (400, 404):
            return self._error(
                f"{endpoint}: HTTP {exc.code}{said}: the zone or the span was rejected"
                " (zone ids such as DE, FR or US-CAL-CISO are listed at"
                " https://api.electricitymaps.com/v3/zones)"
            )
        return self._error(f"{endpoint}: HTTP {exc.code}{said}")

    def _unreached(self, text: str) -> InputError:
        """The error of a failure to reach the service, kept: no later request is tried."""
        error = self._asked[_UNREACHED] = self._error(text)
        return error

    def _error(self, text: str) -> InputError:
        message = f"Electricity Maps zone {self.zone}: {text}"
        return InputError(message.replace(self.key, "***") if self.key else message)


def _message(exc: urllib.error.HTTPError) -> str:
    """The service's own words for an error (its JSON ``message`` or ``error``), if any."""
    import http.client

    try:
        data = json.loads(exc.read(4096) or b"null")
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    said = data.get("message") or data.get("error") if isinstance(data, dict) else None
    return f" ({quote(said, 120)})" if isinstance(said, str) and said else ""


def _is_g_per_kwh(value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        g = float(value)
    except OverflowError:  # an integer beyond any float
        return False
    return math.isfinite(g) and 0.0 <= g <= MAX_G_PER_KWH


def _when(value: object, where: str, source: ElectricityMaps) -> float:
    moment = iso_time(value)
    if moment is None or moment.tzinfo is None:
        raise source._error(f"{where} {quote(value)}: expected an ISO 8601 time with its zone")
    return moment.timestamp()


def _iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lookup(zone: str, env: Mapping[str, str]) -> Intensity:
    """The source ``--electricity-maps ZONE`` names: checked now (the zone's spelling, a key
    in ``env``), fetched later for each run's span, by
    :func:`joulecast.carbon.run_emissions`.

    Raises:
        InputError: the zone is not an id, or ``env`` has no API key.
    """
    name = zone.strip()
    if not _ZONE.fullmatch(name):
        raise InputError(
            f"Electricity Maps zone {quote(zone)}: expected a zone id such as DE, FR or"
            " US-CAL-CISO (letters, digits, '-')"
        )
    key = env.get(API_KEY_ENV, "").strip()
    if not key:
        raise InputError(
            f"Electricity Maps zone {name}: no API key: set ${API_KEY_ENV} to your token"
            " (from https://portal.electricitymaps.com); nothing is fetched without one"
        )
    if not _TOKEN.fullmatch(key):  # the key itself is never printed
        said = (
            f"is {len(key):,} characters long, more than any token"
            if len(key) > _MAX_TOKEN
            else "holds a space, a line break, a control or a non-ASCII character, which no"
            " token has"
        )
        raise InputError(
            f"Electricity Maps zone {name}: ${API_KEY_ENV} {said}: set it to the token alone"
        )
    base = env.get(URL_ENV, "").strip() or BASE_URL
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"${URL_ENV} {quote(base)}: expected an http:// or https:// URL")
    maps = ElectricityMaps(name, key, base)
    return Intensity(maps.source, lookup=maps.history)
