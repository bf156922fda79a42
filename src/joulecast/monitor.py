"""The sampler: reads sensors at a fixed interval on a monotonic clock and streams to the store.

Two daemon threads per monitor. The sampler wakes on a fixed grid (``start + k * interval``),
reads every sensor, and appends readings to a buffer; a tick that starts more than one interval
late counts its skipped slots as missed deadlines and realigns. The writer commits the buffer,
phase marks and gaps every ``flush_interval_s`` (0.5 s), so a killed process loses at most that
much. A sensor that raises, or a device silent for longer than the gap threshold, opens a gap;
nothing a sensor does stops the sampling or the training it measures.
"""

from __future__ import annotations

import array
import atexit
import logging
import math
import platform
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from joulecast.errors import InputError, JoulecastError
from joulecast.records import (
    Gap,
    Phase,
    PhaseKind,
    Reading,
    RunStatus,
    overlap_message,
    overlapping,
)
from joulecast.sensors import Sensor, sensor_name
from joulecast.store import Store

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.1
MIN_INTERVAL_S = 0.001
FLUSH_INTERVAL_S = 0.5
# Readings kept in memory while the store cannot be written; older ones are dropped beyond it.
MAX_BUFFERED = 2_000_000
_JITTER_KEEP = 200_000
# Longest single sleep of the sampler: how long stop() may wait for it at most.
_STOP_CHECK_S = 0.1
# How often devices are checked for silence (the gap threshold is at least 1 s).
_GAP_CHECK_S = 0.1


def host_facts() -> dict[str, Any]:
    """Facts about this machine recorded with every run."""
    try:
        freq = psutil.cpu_freq()
    except (OSError, RuntimeError, NotImplementedError):
        freq = None
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from joulecast._version import __version__

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "joulecast": __version__,
        "cpu_model": cpu_model,
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "cpu_max_mhz": freq.max if freq else None,
        "ram_total_gb": psutil.virtual_memory().total / 1e9,
    }


class Monitor:
    """Samples ``sensors`` every ``interval_s`` into a run of ``store``.

    ``run_id`` joins an existing run (another process samples it): this monitor then only
    writes phase marks. ``uid`` names a new run across stores (default: a random one).
    ``clock`` stamps readings and phases (monotonic seconds); scheduling always follows the
    real monotonic clock.
    """

    def __init__(
        self,
        sensors: Sequence[Sensor],
        store: Store,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        gap_after_s: float | None = None,
        uid: str | None = None,
    ) -> None:
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s)) or (
            interval_s < MIN_INTERVAL_S
        ):
            raise InputError(f"interval_s must be at least {MIN_INTERVAL_S} s, got {interval_s!r}")
        self.sensors = list(sensors)
        self.store = store
        self.interval_s = float(interval_s)
        self.name = name
        self.tags = dict(tags or {})
        self.run_id = run_id
        self.uid = uid
        self.joined = run_id is not None
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._gap_after_s = gap_after_s if gap_after_s is not None else _gap_after(interval_s)
        self.t0 = 0.0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffer: list[Reading] = []
        self._phases: dict[tuple[str, int], Phase] = {}
        # What a new phase may not overlap: the open phases, and per kind the ended phase that
        # ends last (ended phases leave _phases once written; steps may be many between two).
        self._open: dict[tuple[str, int], Phase] = {}
        self._last_ended: dict[str, Phase] = {}
        self._closed_gaps: list[Gap] = []
        self._open_gaps: dict[str, Gap] = {}
        self._last_seen: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        self._sensor_devices: list[tuple[Sensor, list[str]]] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._ticks = 0
        self._ticks_done = 0
        self._missed = 0
        self._dropped = 0
        self._readings = 0
        self._n_gaps = 0
        self._flushes = 0
        self._next_gap_check = 0.0
        self._write_errors = 0
        # Seconds between ticks, the last _JITTER_KEEP of them (an array: no numpy call per tick).
        self._tick_gaps = array.array("d")
        self._sampler_cpu_s = 0.0
        self._writer_cpu_s = 0.0
        self._started_mono = 0.0
        self._stopped_mono: float | None = None
        self._joined_interval_s = self.interval_s
        self._run_devices: set[str] = set()  # a joined run's devices, once read
        self._silent: set[str] = set()  # joined: devices that timed out, not waited for
        self.running = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> int:
        """Create the run (unless joining), start the threads, and return the run id."""
        if self.running:
            raise JoulecastError("monitor already started")
        if self.joined:
            assert self.run_id is not None
            row = self.store.run(self.run_id)
            self.t0 = row["start_mono_s"] if row["start_mono_s"] is not None else self._clock()
            self._joined_interval_s = row["interval_s"] or DEFAULT_INTERVAL_S
        else:
            self.t0 = self._clock()
            hardware = host_facts()
            hardware["sensors"] = {sensor_name(s): _describe(s) for s in self.sensors}
            hardware["gpu_models"] = sorted(
                {
                    str(info.get("name"))
                    for s in self.sensors
                    for dev, info in _describe(s).items()
                    if dev.startswith("gpu:") and info.get("name")
                }
            )
            replayed = any(getattr(s, "replayed", False) for s in self.sensors)
            self.run_id = self.store.create_run(
                name=self.name,
                tags=self.tags,
                hardware=hardware,
                origin="replay" if replayed else "measure",
                start_mono_s=self.t0,
                interval_s=self.interval_s,
                uid=self.uid,
            )
        self._started_mono = time.monotonic()
        self.running = True
        self._sensor_devices = [(s, s.devices()) for s in self.sensors]
        if self.sensors:
            # A first reading now, so the run's energy starts at its start.
            now = self._clock()
            for device in (d for _, ds in self._sensor_devices for d in ds):
                self._last_seen[device] = now
            self._tick(self._sensor_devices)
        self._writer = threading.Thread(
            target=self._write_loop, name="joulecast-writer", daemon=True
        )
        self._writer.start()
        if self.sensors:
            self._sampler = threading.Thread(
                target=self._sample_loop, name="joulecast-sampler", daemon=True
            )
            self._sampler.start()
        atexit.register(self._at_exit)
        return self.run_id

    def _at_exit(self) -> None:
        if self.running:
            log.warning("run %s was not stopped; stopping it at interpreter exit", self.run_id)
            self.stop(RunStatus.INTERRUPTED)

    def stop(
        self,
        status: RunStatus = RunStatus.COMPLETED,
        *,
        exit_code: int | None = None,
        signal: str | None = None,
    ) -> None:
        """Stop sampling, write everything, close the sensors and finish the run."""
        if not self.running:
            return
        self.running = False
        atexit.unregister(self._at_exit)
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
            self._tick(self._sensor_devices)  # a last reading, so the energy ends at the end
        self._stopped_mono = time.monotonic()
        now = self._clock() - self.t0
        with self._lock:
            for device, gap in self._open_gaps.items():
                self._closed_gaps.append(Gap(device, gap.start_s, now, gap.reason))
            self._open_gaps.clear()
            for key, phase in list(self._phases.items()):
                if phase.end_s is None:
                    log.warning("%s %d was never ended; closing it at stop", *key)
                    self._phases[key] = _replace_phase(phase, end_s=now)
        if self._writer is not None:
            self._writer.join()
        self._flush()  # whatever the writer's last pass could not write
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception as exc:  # a sensor's cleanup must not fail the run
                log.warning("closing sensor %s failed: %s", sensor_name(sensor), exc)
        if not self.joined:
            assert self.run_id is not None
            self.store.finish_run(
                self.run_id,
                status,
                duration_s=now,
                exit_code=exit_code,
                signal=signal,
                quality=self.quality(),
            )

    # -- phases ----------------------------------------------------------------------------

    def now_s(self) -> float:
        """Seconds since the run started, on the run's clock."""
        return self._clock() - self.t0

    def begin_phase(self, kind: PhaseKind, index: int, *, start_s: float | None = None) -> None:
        """Open phase ``kind``/``index`` now (or at ``start_s``).

        Raises:
            InputError: Another phase of the kind is open, or ended after ``start_s``:
                phases of one kind follow one another (steps may nest in epochs).
        """
        start = self.now_s() if start_s is None else start_s
        phase = Phase(kind, index, start)
        with self._lock:
            self._check_overlap(phase)
            self._phases[(kind.value, index)] = self._open[(kind.value, index)] = phase

    def end_phase(
        self,
        kind: PhaseKind,
        index: int,
        *,
        samples: int | None = None,
        metrics: dict[str, Any] | None = None,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> Phase:
        """Close phase ``kind``/``index`` now (or at ``end_s``); ``start_s`` opens it implicitly."""
        end = self.now_s() if end_s is None else end_s
        with self._lock:
            open_phase = self._phases.get((kind.value, index))
            if open_phase is None or open_phase.end_s is not None:
                if start_s is None:
                    raise InputError(f"{kind.value} {index} was not begun")
                open_phase = Phase(kind, index, start_s)
            phase = Phase(
                kind,
                index,
                open_phase.start_s if start_s is None else start_s,
                end,
                samples,
                dict(metrics or {}),
            )
            if phase.end_s is not None and phase.end_s < phase.start_s:
                raise InputError(f"{kind.value} {index}: end {end} s is before its start")
            self._check_overlap(phase)
            self._phases[(kind.value, index)] = phase
            self._open.pop((kind.value, index), None)
            last = self._last_ended.get(kind.value)
            if last is None or last.end_s is None or end >= last.end_s:
                self._last_ended[kind.value] = phase
        return phase

    def _check_overlap(self, phase: Phase) -> None:
        """Refuse ``phase`` where it overlaps an open phase of its kind or the last one ended
        (:func:`~joulecast.records.overlapping`); the caller holds the lock."""
        others = [
            p
            for p in (*self._open.values(), self._last_ended.get(phase.kind.value))
            if p is not None and p.kind is phase.kind and p.index != phase.index
        ]
        found = overlapping([*others, phase])
        if found is not None:
            raise InputError(overlap_message(*found))

    # -- sampling --------------------------------------------------------------------------

    def _sample_loop(self) -> None:
        interval = self.interval_s
        sensors = self._sensor_devices
        tick_gaps = self._tick_gaps
        sleep = time.sleep
        monotonic = time.monotonic
        now = monotonic()
        next_t = now + interval  # start() took the first reading
        last_tick: float | None = None
        cpu0 = time.thread_time()
        while self.running:
            if now < next_t:
                delay = next_t - now
                # A plain sleep is the cheapest timed wait (a lock or Event wait costs 10-20 µs
                # more per wake-up); sleeping at most _STOP_CHECK_S keeps stop() prompt.
                sleep(delay if delay < _STOP_CHECK_S else _STOP_CHECK_S)
                now = monotonic()
                if now < next_t:
                    continue
            if last_tick is not None:
                if self._n_gaps < _JITTER_KEEP:
                    tick_gaps.append(now - last_tick)
                else:
                    tick_gaps[self._n_gaps % _JITTER_KEEP] = now - last_tick
                self._n_gaps += 1
            last_tick = now
            self._ticks += 1
            self._tick(sensors)
            self._ticks_done += 1
            next_t += interval
            # The clock after the tick serves both the lateness check and the next wait.
            now = monotonic()
            late = now - next_t
            if late > interval:
                skipped = int(late // interval)
                self._missed += skipped
                next_t += skipped * interval
        self._sampler_cpu_s = time.thread_time() - cpu0

    def _tick(self, sensors: list[tuple[Sensor, list[str]]]) -> None:
        batch: list[Reading] = []
        last_seen = self._last_seen
        open_gaps = self._open_gaps
        for sensor, _ in sensors:
            try:
                readings = sensor.read()
            except Exception as exc:  # any sensor failure becomes a gap, never a crash
                self._last_error[sensor_name(sensor)] = f"{type(exc).__name__}: {exc}"
                continue
            batch += readings
            for r in readings:
                last_seen[r.device] = r.t_s
            if open_gaps:
                for r in readings:
                    if r.device in open_gaps:
                        self._close_gap(r.device, r.t_s - self.t0)
        now = self._clock()
        if now >= self._next_gap_check:
            self._open_gaps_of_silent_devices(sensors, now)
        if batch:
            with self._lock:
                self._buffer += batch
                self._readings += len(batch)

    def _open_gaps_of_silent_devices(
        self, sensors: list[tuple[Sensor, list[str]]], now: float
    ) -> None:
        for sensor, devices in sensors:
            for device in devices:
                if (
                    device not in self._open_gaps
                    and now - self._last_seen.get(device, now) > self._gap_after_s
                ):
                    reason = self._last_error.get(sensor_name(sensor), "no readings")
                    self._open_gaps[device] = Gap(
                        device, self._last_seen[device] - self.t0, None, reason
                    )
                    log.warning("%s: no readings since %.1f s (%s)", device, now - self.t0, reason)
        self._next_gap_check = now + _GAP_CHECK_S

    def _close_gap(self, device: str, end_s: float) -> None:
        gap = self._open_gaps.pop(device)
        with self._lock:
            self._closed_gaps.append(Gap(device, gap.start_s, end_s, gap.reason))

    # -- writing ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        cpu0 = time.thread_time()
        while not self._stop.wait(self._flush_interval_s):
            self._flush()
        self._flush()
        self._writer_cpu_s = time.thread_time() - cpu0

    def _flush(self) -> None:
        # One flush at a time: a flush that finds the buffer empty returns only once the
        # readings another thread took from it are committed.
        with self._flush_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        with self._lock:
            readings, self._buffer = self._buffer, []
            snapshot = dict(self._phases)
            phases = list(snapshot.values())
            gaps, self._closed_gaps = self._closed_gaps, []
        if not (readings or phases or gaps) and not self.running:
            return
        assert self.run_id is not None
        try:
            self.store.write_batch(
                self.run_id,
                readings,
                t0=self.t0,
                phases=phases,
                gaps=gaps,
                # Quality figures ride along every 20th flush (10 s): enough for a run that
                # dies, without a JSON document per flush.
                quality=None if self.joined or self._flushes % 20 else self.quality(),
            )
        except Exception as exc:  # the store failing must not stop the training
            self._write_errors += 1
            log.error("writing to %s failed (%s); will retry", self.store.path, exc)
            with self._lock:
                self._buffer[:0] = readings
                if len(self._buffer) > MAX_BUFFERED:
                    self._dropped += len(self._buffer) - MAX_BUFFERED
                    del self._buffer[: len(self._buffer) - MAX_BUFFERED]
                self._closed_gaps[:0] = gaps
            return
        self._flushes += 1
        with self._lock:
            for key, phase in snapshot.items():
                # Forget a finished phase only if nobody changed it while it was being written.
                if phase.end_s is not None and self._phases.get(key) is phase:
                    del self._phases[key]

    def flush(self) -> None:
        """Write everything buffered now (from the calling thread)."""
        self._flush()

    @property
    def sampling_interval_s(self) -> float:
        """The interval the run is sampled at: this monitor's, or the sampling process's."""
        return self._joined_interval_s if self.joined else self.interval_s

    @property
    def gap_after_s(self) -> float:
        """How long a device may stay silent before it is in a gap (for a joined monitor, at
        the interval of the process that samples the run)."""
        return _gap_after(self._joined_interval_s) if self.joined else self._gap_after_s

    def wait_for_readings(self, until_s: float, *, timeout_s: float | None = None) -> bool:
        """Wait until the store holds a reading of every device at or after ``until_s``.

        ``until_s`` is in run seconds and already past. The energy of a phase ending then is
        final once this returns True: later readings no longer change it. When this monitor
        samples, it waits for the next reading of each of its devices (a device in a gap is
        not waited for) and writes it; when it joined a run sampled by another process, it
        waits for that process to store them (its writes come every 0.5 s), to finish the
        run, or to be gone (:meth:`joulecast.store.Store.recording`). Returns False when
        ``timeout_s`` (default: a few intervals and flushes) passed first, or a device is
        still silent; the caller goes on with what is stored. A joined monitor stops waiting
        for a device that timed out until it has readings again.
        """
        interval = self.sampling_interval_s
        if timeout_s is None:
            timeout_s = (
                max(5.0, 10 * interval + 4 * self._flush_interval_s)
                if self.joined
                else 3 * interval + 1.0
            )
        deadline = time.monotonic() + timeout_s
        poll = min(max(interval / 4, 0.005), 0.05)
        done = True
        while missing := self._awaited(until_s):
            if time.monotonic() >= deadline:
                log.info("no readings of %s after %.2f s yet", ", ".join(sorted(missing)), until_s)
                if self.joined:
                    self._silent |= missing
                done = False
                break
            time.sleep(poll)
        self._flush()
        return done and not (self.joined and self._silent)

    def _awaited(self, until_s: float) -> set[str]:
        """The devices with no stored reading at or after ``until_s`` (run seconds) yet."""
        if not self.joined:
            if self._sampler is None or not self._sampler.is_alive():
                return set()
            devices = {d for _, ds in self._sensor_devices for d in ds}
            waiting = {
                d
                for d in devices
                if d not in self._open_gaps
                and self._last_seen.get(d, -math.inf) - self.t0 < until_s
            }
            # A tick under way may have seen its readings but not buffered them yet.
            return waiting or ({"(tick)"} if self._ticks_done < self._ticks else set())
        assert self.run_id is not None
        try:
            if not self._run_devices:
                # Every device is read at the run's start, so its first second names them all.
                self._run_devices = set(self.store.samples(self.run_id, end_s=1.0)["device"])
            devices = self._run_devices or {"(the run's first readings)"}
            stored = set(self.store.samples(self.run_id, start_s=until_s)["device"])
            self._silent -= stored  # readings again: waited for again
            waiting = devices - self._silent - stored
            if waiting and not self.store.recording(self.run_id):  # no readings will come
                return set()
        except Exception as exc:  # reading the store must not fail the training's epoch
            log.info("cannot tell whether the readings after %.2f s are stored: %s", until_s, exc)
            return set()
        return waiting

    # -- quality ---------------------------------------------------------------------------

    def quality(self) -> dict[str, Any]:
        """Sampling figures: ticks, rate, missed deadlines; once stopped, jitter and CPU time."""
        end = self._stopped_mono if self._stopped_mono is not None else time.monotonic()
        elapsed = end - self._started_mono if self._started_mono else 0.0
        out: dict[str, Any] = {
            "interval_s": self.interval_s,
            "ticks": self._ticks,
            "achieved_hz": self._ticks / elapsed if elapsed > 0 else None,
            "missed_deadlines": self._missed,
            "readings": self._readings,
            "write_errors": self._write_errors,
            "dropped_readings": self._dropped,
            "sensors": [sensor_name(s) for s in self.sensors],
        }
        if self._tick_gaps and self._stopped_mono is not None:
            import numpy as np

            # Percentiles sort the whole record: computed once, at stop, not at every flush.
            # A copy: numpy holding the array's buffer would stop it from growing.
            gaps = np.array(self._tick_gaps.tolist())
            out["tick_interval_p50_s"] = float(np.percentile(gaps, 50))
            out["tick_interval_p99_s"] = float(np.percentile(gaps, 99))
        if self._stopped_mono is not None:
            out["sampler_cpu_s"] = self._sampler_cpu_s
            out["writer_cpu_s"] = self._writer_cpu_s
        return out


def _gap_after(interval_s: float) -> float:
    """The default silence that opens a gap: ten intervals, at least 1 s."""
    return max(10 * interval_s, 1.0)


def _describe(sensor: Sensor) -> dict[str, dict[str, Any]]:
    describe = getattr(sensor, "describe", None)
    if describe is None:
        return {d: {} for d in sensor.devices()}
    try:
        return dict(describe())
    except Exception as exc:  # static facts are nice to have, not worth failing for
        log.debug("describe() of %s failed: %s", sensor_name(sensor), exc)
        return {}


def _replace_phase(phase: Phase, **changes: Any) -> Phase:
    from dataclasses import replace

    return replace(phase, **changes)
