"""A run's live figures for Prometheus: an HTTP endpoint to scrape, or a file for node_exporter.

:class:`Exporter` reads the run where its samples are written (the store's per-device energy
aggregates, its epochs and the forecasts stored with them, the sampler's own figures) once a
``refresh_s`` on a thread of its own, and serves the last reading of them: a scrape never
waits on the store, and nothing the exporter does can stop the measurement. It writes the
Prometheus text format (version 0.0.4) itself; the figures are a few gauges and counters, so
no client library is needed on the nodes that train.

Every series carries the labels ``run`` (the run id), ``host``; per-device series also
``device`` and ``origin`` (measured, replayed or modelled). See ``docs/prometheus.md``.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from joulecast.errors import InputError, JoulecastError, warn
from joulecast.inputs import quote, whole
from joulecast.records import EnergyOrigin, PhaseKind

if TYPE_CHECKING:
    import os

    from joulecast.monitor import Monitor
    from joulecast.store import Store

log = logging.getLogger(__name__)

#: Where the endpoint listens when only a port is given: this machine alone. The figures
#: reveal nothing sensitive, but an open port on a shared cluster node is the operator's call.
DEFAULT_HOST = "127.0.0.1"
#: Seconds between two readings of the run (the store is written every 0.5 s).
REFRESH_S = 1.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A device is up while its latest stored reading is younger than the monitor's gap threshold
# plus this: the stored readings lag the sampler by a flush or two.
_STORE_LAG_S = 1.0

Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class Family:
    """One metric: its name (a counter's ends in ``_total``), type, help and samples."""

    name: str
    kind: Kind
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def exposition(families: Iterable[Family]) -> str:
    """``families`` in the Prometheus text format; a family without samples is left out."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {family.name} {help_text}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(
                f"{family.name}{{{inner}}} {_number(value)}"
                if inner
                else f"{family.name} {_number(value)}"
            )
    return "\n".join(lines) + "\n" if lines else ""


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def parse_listen(text: str | int, what: str = "--prometheus") -> tuple[str, int]:
    """The address and port of ``[ADDR:]PORT`` (``9100``, ``:9100``, ``0.0.0.0:9100``,
    ``[::1]:9100``); without ``ADDR``, :data:`DEFAULT_HOST`. Port 0 picks a free port.

    Raises:
        InputError: ``text`` is not of that shape (``what`` names the option).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return DEFAULT_HOST, whole(text, f"{what} port", lo=0, hi=65535)
    raw = str(text).strip()
    expected = "expected [ADDR:]PORT, as 9100, :9100, 0.0.0.0:9100 or [::1]:9100"
    if raw.startswith("["):
        host, bracket, rest = raw[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host:
            raise InputError(f"{what}: {quote(text)}: {expected}")
        port = rest[1:]
    else:
        host, _, port = raw.rpartition(":")
        if ":" in host:
            raise InputError(f"{what}: {quote(text)}: an IPv6 address goes in brackets, {expected}")
    if not port.isdigit():
        raise InputError(f"{what}: {quote(text)}: {expected}")
    return host or DEFAULT_HOST, whole(port, f"{what} port", lo=0, hi=65535)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    exporter: Exporter

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that hangs up mid-answer is not worth a traceback on the training's stderr.
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        if self.path.split("?", 1)[0] not in ("/", "/metrics"):
            self.send_error(404, "metrics are at /metrics")
            return
        data = self.server.exporter.text().encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics request: " + format, *args)


class Exporter:
    """Exposes one run's live figures: on ``listen`` (``[ADDR:]PORT``) over HTTP, at
    ``/metrics``, and/or in the file ``textfile`` (rewritten whole at each refresh, for
    node_exporter's textfile collector).

    Create it before the run starts (it binds the port then, so a port in use is found
    before anything is measured), then :meth:`watch` the run and :meth:`close` it after the
    run stopped: the last refresh then holds the run's final figures, and the file keeps them.

    Raises:
        InputError: ``listen`` is malformed or cannot be listened on (a port in use, an
            address not of this machine), or ``textfile``'s folder does not exist.
    """

    def __init__(
        self,
        *,
        listen: str | int | None = None,
        textfile: str | os.PathLike[str] | None = None,
        refresh_s: float = REFRESH_S,
        what: str = "--prometheus",
    ) -> None:
        from joulecast.outputs import check_output

        self.textfile = Path(textfile) if textfile is not None else None
        if self.textfile is not None:
            try:
                check_output(self.textfile)
            except InputError as exc:
                raise InputError(f"{what}-textfile: {exc}") from exc
        self.refresh_s = refresh_s
        self.refresh_errors = 0
        self._text = ""
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: RunReader | None = None
        self._server: _Server | None = None
        self._url: str | None = None
        self._serving: threading.Thread | None = None
        if listen is not None:
            host, port = parse_listen(listen, what)
            self._server = _bind(host, port, f"{what} {listen}")
            self._server.exporter = self
            bound_host, bound_port = self._server.server_address[:2]
            shown = str(bound_host, "ascii") if isinstance(bound_host, bytes) else str(bound_host)
            shown = f"[{shown}]" if ":" in shown else shown
            self._url = f"http://{shown}:{bound_port}/metrics"
            self._serving = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="joulecast-prometheus-http",
                daemon=True,
            )
            self._serving.start()

    @property
    def url(self) -> str | None:
        """Where the metrics are served (with the port chosen, where 0 was asked); None
        without ``listen``."""
        return self._url

    def text(self) -> str:
        """The metrics as last read (what a scrape gets)."""
        with self._lock:
            return self._text

    def watch(self, store: Store, run_id: int, monitor: Monitor) -> None:
        """Read run ``run_id`` of ``store`` now and every ``refresh_s`` until :meth:`close`."""
        self._reader = RunReader(store, run_id, monitor)
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="joulecast-prometheus", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def refresh(self) -> None:
        """Read the run again, serve it and write the file; never raises (failures are
        logged, once per kind, and counted in ``joulecast_exporter_errors_total``)."""
        reader = self._reader
        if reader is None:
            return
        try:
            families = reader.families()
        except Exception as exc:  # the figures must never cost the measurement
            self._failed("reading the run", exc)
            families = None
        with self._lock:
            if families is not None:
                families.append(
                    Family(
                        "joulecast_exporter_errors_total",
                        "counter",
                        "Refreshes of these metrics that failed (the last good ones are served).",
                        [(dict(reader.labels), float(self.refresh_errors))],
                    )
                )
                self._text = exposition(families)
            text = self._text
        if self.textfile is not None and families is not None:
            self._write_file(self.textfile, text)

    def _write_file(self, path: Path, text: str) -> None:
        from joulecast.outputs import write_atomic

        try:
            write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        except Exception as exc:  # a full disk must not stop the training either
            self._failed(f"writing {path}", exc)

    def _failed(self, doing: str, exc: Exception) -> None:
        self.refresh_errors += 1
        kind = (doing, type(exc).__name__)
        if kind not in self._logged:  # once per kind, not once a second
            self._logged.add(kind)
            log.warning("Prometheus metrics: %s failed: %s", doing, exc)

    def close(self) -> None:
        """Refresh a last time, stop refreshing and stop serving (the file stays)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.refresh()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _bind(host: str, port: int, what: str) -> _Server:
    """An HTTP server bound to ``host``:``port``, or an InputError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"{what}: cannot listen on {host!r}: {exc.strerror}") from exc
    family = infos[0][0]
    address = str(infos[0][4][0])
    server_class = _Server6 if family == socket.AF_INET6 else _Server
    try:
        return server_class((address, port), _Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"{what}: port {port} is in use on {address} (another run's exporter?);"
                " choose another port"
            ) from exc
        raise InputError(f"{what}: cannot listen on {address}:{port}: {exc.strerror}") from exc


def open_exporter(
    listen: str | int | None,
    textfile: str | os.PathLike[str] | None,
    *,
    strict: bool,
    what: str = "prometheus",
) -> Exporter | None:
    """The exporter a measurement asked for (None where it asked for none).

    ``strict`` False (a training measuring itself): an exporter that cannot start is a
    warning, and the training goes on unexported; a malformed ``listen`` still raises.
    """
    if listen is None and textfile is None:
        return None
    if listen is not None:
        parse_listen(listen, what)
    try:
        return Exporter(listen=listen, textfile=textfile, what=what)
    except JoulecastError as exc:
        if strict:
            raise
        warn(f"{exc}; measuring without Prometheus metrics")
        return None


class RunReader:
    """Turns what the store holds of one run, and the monitor's sampling figures, into
    metric families; counters never go down (see :meth:`families`)."""

    def __init__(self, store: Store, run_id: int, monitor: Monitor) -> None:
        self.store = store
        self.run_id = run_id
        self.monitor = monitor
        self._counted: dict[str, float] = {}
        # The host this process samples: what the run records as its hostname.
        self.labels = {"run": str(run_id), "host": socket.gethostname()}

    def families(self) -> list[Family]:
        """The run's figures now.

        A device's energy counter holds its value where the store's figure dips (a device
        whose energy turns from its power readings to its counter as the counter's second
        reading arrives): Prometheus reads any decrease as a reset.
        """
        states = self.store.device_energy(self.run_id)
        base = self.labels
        running = self.monitor.running
        now_s = self.monitor.now_s() if running else self._end_s(states)
        stale_s = self.monitor.gap_after_s + _STORE_LAG_S
        power = Family("joulecast_power_watts", "gauge", "Latest power reading of the device.")
        energy = Family(
            "joulecast_energy_joules_total",
            "counter",
            "Energy of the device since the run started (its counter, else its power integrated).",
        )
        seen = Family(
            "joulecast_reading_time_seconds",
            "gauge",
            "Run time of the device's latest stored reading.",
        )
        up = Family(
            "joulecast_device_up",
            "gauge",
            "1 while the device's readings arrive; 0 when it has been silent past the gap"
            " threshold (a sensor failing).",
        )
        for device, state in sorted(states.items()):
            labels = {
                **base,
                "device": device,
                "origin": EnergyOrigin.of(state.source, state.measured).value,
            }
            if state.power_rows:
                power.samples.append((labels, state.power_w))
            if not math.isnan(state.energy_j):
                counted = max(self._counted.get(device, 0.0), state.energy_j)
                self._counted[device] = counted
                energy.samples.append((labels, counted))
            if math.isfinite(state.t_last_s):
                seen.samples.append((labels, state.t_last_s))
            up.samples.append((labels, float(now_s - state.t_last_s <= stale_s)))
        total = Family(
            "joulecast_run_energy_joules_total",
            "counter",
            "Energy of the run since it started: every device's counter summed.",
            [(dict(base), math.fsum(self._counted.values()))],
        )
        return [
            Family(
                "joulecast_run_active",
                "gauge",
                "1 while the run is sampled, 0 once it ended.",
                [(dict(base), float(running))],
            ),
            Family("joulecast_run_seconds", "gauge", "Run time so far.", [(dict(base), now_s)]),
            power,
            energy,
            total,
            *self._epochs(),
            seen,
            up,
            *self._sampling(),
        ]

    @staticmethod
    def _end_s(states: Mapping[str, Any]) -> float:
        return max((s.t_last_s for s in states.values()), default=0.0)

    def _epochs(self) -> list[Family]:
        """The current epoch, the epochs done, and the latest forecast stored with one."""
        phases = self.store.phases(self.run_id, PhaseKind.EPOCH.value)
        base = self.labels
        families = [
            Family(
                "joulecast_epoch",
                "gauge",
                "Index of the current epoch (the latest begun).",
                [(dict(base), float(phases["index"].max()))] if len(phases) else [],
            ),
            Family(
                "joulecast_epochs_completed",
                "gauge",
                "Epochs ended so far.",
                [(dict(base), float(phases["end_s"].notna().sum()))],
            ),
        ]
        forecast: Mapping[str, Any] | None = None
        for metrics in phases.sort_values("index")["metrics"]:
            if isinstance(metrics.get("forecast"), Mapping):
                forecast = metrics["forecast"]
        fields: Sequence[tuple[str, str, str]] = (
            ("total_j", "joulecast_forecast_energy_joules", "Live forecast of the run's total"),
            ("low_j", "joulecast_forecast_low_joules", "Lower bound of the live forecast"),
            ("high_j", "joulecast_forecast_high_joules", "Upper bound of the live forecast"),
            (
                "remaining_j",
                "joulecast_forecast_remaining_joules",
                "Energy the live forecast expects the run still to use",
            ),
            ("total_epochs", "joulecast_epochs_planned", "Epochs the run plans"),
        )
        for key, name, help_text in fields:
            value = forecast.get(key) if forecast is not None else None
            samples = (
                [(dict(base), float(value))]
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                else []
            )
            families.append(
                Family(name, "gauge", help_text + " (after the latest epoch).", samples)
            )
        return families

    def _sampling(self) -> list[Family]:
        """The sampler's own figures, where this process samples the run."""
        if self.monitor.joined:
            return []
        quality = self.monitor.quality()
        base = self.labels
        rate = quality.get("achieved_hz")
        return [
            Family(
                "joulecast_sampling_interval_seconds",
                "gauge",
                "Interval the sampler is asked to read the sensors at.",
                [(dict(base), float(quality["interval_s"]))],
            ),
            Family(
                "joulecast_sampling_rate_hertz",
                "gauge",
                "Sensor readings per second the sampler achieves.",
                [(dict(base), float(rate))] if rate is not None else [],
            ),
            Family(
                "joulecast_sampling_missed_deadlines_total",
                "counter",
                "Sampling ticks skipped because the sampler ran late.",
                [(dict(base), float(quality["missed_deadlines"]))],
            ),
            Family(
                "joulecast_store_write_errors_total",
                "counter",
                "Writes of readings to the store that failed (they are retried).",
                [(dict(base), float(quality["write_errors"]))],
            ),
        ]
