"""Tests of joulecast.analysis.data (run_table, synthetic_store) and joulecast.analysis.clean.

run_table computes energy without summarize(); every figure is checked against summarize(),
the slow, obviously-correct reference, on measured, imported and synthetic runs; so are the
offline estimators' run rows (joulecast.offline.store_table), built from the run table, against
the summarize()-based rows they were built from before.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import joulecast
from joulecast.analysis.clean import (
    EMPTY,
    MIN_GROUP_SIZE,
    NOT_COMPLETED,
    OUTLIERS,
    SLOW_SAMPLING,
    CleaningLog,
    clean,
)
from joulecast.analysis.data import COLUMNS, run_table, synthetic_store
from joulecast.energy import summarize
from joulecast.errors import InputError
from joulecast.offline.store_table import TAG_FEATURES, run_row, runs_table
from joulecast.records import Phase, PhaseKind, Reading
from joulecast.sensors.replay import ReplaySensor
from joulecast.store import Store

# -- helpers ------------------------------------------------------------------------------------


class WavySensor:
    """gpu:0 with a wavy power and utilisation; gpu:1 with an energy counter; modelled ram."""

    name = "wavy"

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def devices(self) -> list[str]:
        return ["gpu:0", "gpu:1", "ram"]

    def describe(self) -> dict[str, dict[str, str]]:
        return {
            "gpu:0": {"name": "NVIDIA A100-SXM4-40GB"},
            "gpu:1": {"name": "NVIDIA A100-SXM4-40GB"},
        }

    def read(self) -> list[Reading]:
        now = time.monotonic()
        x = now - self.t0
        return [
            Reading(
                now, "gpu:0", 150 + 50 * math.sin(7 * x), "wavy", util_pct=50 + 40 * math.sin(3 * x)
            ),
            Reading(now, "gpu:1", 80.0, "wavy", energy_j=1000 + 80.0 * x, util_pct=20.0),
            Reading(now, "ram", 5.0, "model", measured=False),
        ]

    def close(self) -> None:
        pass


def expected_row(store: Store, run_id: int) -> dict[str, float]:
    """The run-table figures of one run, from summarize() and the store's own accessors."""
    s = summarize(store, run_id)
    devices = s.devices.values()
    epochs = s.epochs.dropna(subset=["end_s"])
    samples = store.samples(run_id)
    util = samples.loc[samples["device"].str.startswith("gpu:"), "util_pct"].dropna()
    gpu = [d.energy_j for d in devices if d.device.startswith("gpu:")]
    gpus = [d.device for d in devices if d.device.startswith("gpu:")]  # those with energy
    metered = samples.loc[samples["device"].isin(gpus), "util_pct"].dropna()
    gpu_ram = gpus + [d.device for d in devices if d.device == "ram"]
    per_epoch = sum(epochs[f"energy_j[{d}]"] for d in gpu_ram)
    epoch_mean = float(np.mean(per_epoch)) if gpu_ram and len(epochs) else math.nan
    measured = [d.energy_j for d in devices if d.measured and not d.replayed]
    return {
        "energy_j": s.energy_j if s.devices else math.nan,
        "energy_j_measured": sum(measured) if measured else math.nan,
        "energy_j_replayed": s.energy_j_replayed if s.devices else math.nan,
        "energy_j_gpu": sum(gpu) if gpu else math.nan,
        "epochs": len(epochs),
        "images": s.samples_processed if s.samples_processed is not None else math.nan,
        "train_duration_s": float(epochs["duration_s"].sum()) if len(epochs) else math.nan,
        "duration_s": s.duration_s if (s.duration_s or len(samples)) else math.nan,
        "f1": number((s.test or {}).get("metrics", {}).get("f1")),
        "accuracy": number((s.test or {}).get("metrics", {}).get("accuracy")),
        "gpu_util_pct": float(util.mean()) if len(util) else math.nan,
        "energy_j_gpu_ram": sum(s.devices[d].energy_j for d in gpu_ram) if gpu_ram else math.nan,
        "epoch_energy_j_gpu_ram": epoch_mean,
        "gpu_util_pct_metered": float(metered.mean()) if len(metered) else math.nan,
    }


def expected_offline_row(store: Store, run_id: int) -> dict:
    """The offline estimators' run row as it was built before the run table: from summarize()."""
    run = store.run(run_id)
    tags, hardware = run["tags"], run["hardware"]
    models = [] if tags.get("gpu") else hardware.get("gpu_models") or []
    size = {k: tags.get(k) or tags.get("input_size") for k in ("input_height", "input_width")}
    summary = summarize(store, run_id)
    gpus = [d for d in summary.devices if d.startswith("gpu:")]
    epochs = summary.epochs.dropna(subset=["energy_j"])
    checks = [
        (run["status"] == "completed", f"status {run['status']}"),
        (tags.get("gpu") or models, "no GPU"),
        (tags.get("gpu") or len(models) < 2, f"several GPU models {models}"),
        *((key in tags, f"no {key} tag") for key in TAG_FEATURES),
        *((size[key] is not None, f"no {key} or input_size tag") for key in size),
        (gpus, "no GPU power readings"),
        (len(epochs), "no finished epochs"),
    ]
    for ok, reason in checks:  # in the order they were always checked
        if not ok:
            raise InputError(reason)
    counted = gpus + [d for d in summary.devices if d == "ram"]
    samples = store.samples(run_id)
    util = samples.loc[samples["device"].isin(gpus), "util_pct"].dropna()
    duration = summary.duration_s
    return {
        "run_id": run_id,
        "gpu": tags.get("gpu") or models[0],
        "ram_gb": tags.get("ram_gb") or hardware.get("ram_total_gb"),
        **{key: tags[key] for key in TAG_FEATURES},
        **size,
        "avg_power_w": sum(summary.devices[d].energy_j for d in gpus) / duration
        if duration > 0
        else np.nan,
        "epoch_energy_j": float(np.mean(sum(epochs[f"energy_j[{d}]"] for d in counted))),
        "energy_j": float(sum(summary.devices[d].energy_j for d in counted)),
        "duration_s": duration,
        "epochs": len(epochs),
        "gpu_util_pct": float(util.mean()) if len(util) else np.nan,
    }


def assert_offline_rows_match(store: Store, table: pd.DataFrame) -> Counter:
    """run_row and runs_table against expected_offline_row; the reasons runs were left out."""
    ids = [int(i) for i in table["run_id"]]
    want, reasons = {}, Counter()
    for run_id in ids:
        try:
            want[run_id] = expected_offline_row(store, run_id)
        except InputError as exc:
            reasons[str(exc)] += 1
            with pytest.raises(InputError) as got:
                run_row(store, run_id)
            assert str(got.value) == str(exc), run_id
    for run_id, row in want.items():
        assert_same(run_row(store, run_id), row, run_id)
    if not want:
        with pytest.raises(InputError, match="no run usable for the offline estimators"):
            runs_table(store, ids)
        return reasons
    offline, skipped = runs_table(store, ids)
    assert skipped == reasons
    assert list(offline["run_id"]) == list(want)
    for got in offline.to_dict("records"):
        row = want[got["run_id"]]
        # runs_table turns every column but the GPU's name into numbers
        numeric = {k: pd.to_numeric(v, errors="coerce") for k, v in row.items()}
        assert_same({k: got[k] for k in row}, {**numeric, "gpu": row["gpu"]}, got["run_id"])
    return reasons


def assert_same(got: dict, want: dict, run_id: int) -> None:
    assert list(got) == list(want), run_id
    for key, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert pd.isna(got[key]), (run_id, key, got[key])
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (run_id, key)
        else:
            assert got[key] == value, (run_id, key)


def rows_of(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("run_id")


def number(value: object) -> float:
    return value if isinstance(value, float) else math.nan


def assert_matches_summarize(store: Store, table: pd.DataFrame) -> Counter:
    """Every run's figures against summarize(); the offline rows too (their skip reasons)."""
    for row in table.to_dict("records"):
        want = expected_row(store, int(row["run_id"]))
        for key, value in want.items():
            got = row[key]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert pd.isna(got), (row["run_id"], key, got)
            else:
                assert got == pytest.approx(value, rel=1e-9, abs=1e-9), (row["run_id"], key)
    return assert_offline_rows_match(store, table)


def frame(rows: list[tuple]) -> pd.DataFrame:
    """A samples frame from (t_s, device, power_w, energy_j, util_pct, measured) tuples."""
    out = pd.DataFrame(
        rows, columns=["t_s", "device", "power_w", "energy_j", "util_pct", "measured"]
    )
    out["mem_used_mib"] = np.nan
    out["temp_c"] = np.nan
    out["source"] = "test"
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    store = synthetic_store(tmp_path_factory.mktemp("synthetic") / "study.db", runs_per_group=10)
    yield store, run_table(store)
    store.close()


# -- run_table against summarize ----------------------------------------------------------------


def test_measured_runs_match_summarize(store: Store) -> None:
    tags = {"study": "s1", "arch": "mobilenet_v2", "dataset": "shapes", "batch_size": "32",
            "input_size": "128", "gflops": "0.6", "train_samples": "64", "val_samples": "16",
            "environment": "local", "ram_gb": "16", "repetition": "3", "study_key": "k"}  # fmt: skip
    with joulecast.measure(
        "ok", store=store, sensors=[WavySensor()], interval_s=0.01, tags=tags
    ) as run:
        for epoch in range(3):
            with run.epoch(epoch, samples=64):
                time.sleep(0.08)
        run.begin(PhaseKind.TEST, 0)
        time.sleep(0.03)
        run.end(
            PhaseKind.TEST, 0, samples=16, metrics={"f1": 0.75, "accuracy": 0.8, "roc_auc": None}
        )
    ok = run.run_id
    with pytest.raises(RuntimeError), joulecast.measure("boom", store=store, sensors=[WavySensor()], interval_s=0.01) as run:  # fmt: skip
        with run.epoch(0, samples=64):
            time.sleep(0.05)
        run.begin(PhaseKind.EPOCH, 1)
        time.sleep(0.05)
        raise RuntimeError("out of memory")
    failed = run.run_id

    table = run_table(store)
    assert list(table.columns) == list(COLUMNS)
    assert list(table["run_id"]) == [ok, failed]
    assert list(table["status"]) == ["completed", "failed"]
    assert assert_matches_summarize(store, table) == {"status failed": 1}  # ok: an offline row
    first = table.iloc[0]
    assert first["architecture"] == "mobilenet_v2" and first["study"] == "s1"
    assert first["batch_size"] == 32 and first["gflops"] == 0.6 and first["repetition"] == 3
    assert first["epochs"] == 3 and first["images"] == 192
    assert first["interval_s"] == 0.01  # from the runs table
    assert first["gpu_tdp_w"] == 400.0  # A100 SXM4 40GB, from the recorded gpu_models
    assert first["tags"]["dataset"] == "shapes"
    # 3 epochs of 64 training images and one validation pass of 16 (the val_samples tag) each.
    assert first["val_images"] == 48 and first["images_processed"] == 240
    assert first["j_per_image"] == pytest.approx(first["energy_j"] / 240)
    assert first["j_per_train_image"] == pytest.approx(first["energy_j"] / 192)
    assert first["s_per_image"] == pytest.approx(first["train_duration_s"] / 240)
    assert first["mean_epoch_s"] == pytest.approx(first["train_duration_s"] / 3)
    assert first["avg_power_w"] == pytest.approx(first["energy_j_gpu"] / first["duration_s"])
    assert first["energy_j_measured"] < first["energy_j"]  # the ram is modelled
    second = table.iloc[1]
    # The monitor closes the epoch left open at stop; it counted no images.
    assert second["epochs"] == 2 and second["images"] == 64
    assert math.isnan(second["f1"]) and pd.isna(second["architecture"])


def test_a_replayed_run_says_so_and_keeps_its_replayed_energy_apart(store: Store) -> None:
    trace = pd.DataFrame({"t_s": [0.0, 60.0], "device": "gpu:0", "power_w": [100.0, 100.0]})
    with joulecast.measure(
        store=store, sensors=[ReplaySensor(trace), WavySensor()], interval_s=0.01
    ) as run:
        time.sleep(0.1)
    with joulecast.measure(store=store, sensors=[WavySensor()], interval_s=0.01):
        time.sleep(0.05)
    table = run_table(store)
    assert list(table["origin"]) == ["replay", "measure"]
    assert_matches_summarize(store, table)
    replayed, measured = table.iloc[0], table.iloc[1]
    summary = summarize(store, run.run_id)
    assert summary.energy_j_replayed > 0
    assert replayed["energy_j_replayed"] == pytest.approx(summary.energy_j_replayed)
    assert replayed["energy_j_measured"] == pytest.approx(summary.energy_j_measured)
    assert measured["energy_j_replayed"] == 0.0


def test_imported_runs_with_awkward_samples_match_summarize(store: Store) -> None:
    counter_reset = frame(
        [
            (0.0, "gpu:0", 100.0, 5000.0, 50.0, 1),
            (1.0, "gpu:0", 110.0, 5105.0, 60.0, 1),
            (2.0, "gpu:0", 120.0, 10.0, None, 1),  # driver reload: counter went backwards
            (3.0, "gpu:0", None, 130.0, 70.0, 1),  # no power in this reading
            (3.0, "gpu:0", 90.0, None, 70.0, 1),  # same instant, no counter
            (0.5, "gpu:1", 70.0, None, 10.0, 1),  # unsorted, power only
            (2.5, "gpu:1", 80.0, None, 20.0, 1),
            (1.5, "gpu:1", None, None, 30.0, 1),
            (0.0, "cpu", None, None, 40.0, 1),  # no power at all: not a device
            (0.0, "ram", 3.0, None, None, 0),
            (3.0, "ram", 3.0, None, None, 0),
            (1.0, "disk", 7.0, None, None, 1),  # one sample: a device of 0 J
        ]
    )
    phases = [
        Phase(PhaseKind.EPOCH, 0, 0.0, 1.5, samples=100),
        Phase(PhaseKind.EPOCH, 1, 1.5, 3.0, samples=100),
        Phase(PhaseKind.EPOCH, 2, 3.0, None),  # never finished
        Phase(PhaseKind.STEP, 0, 0.0, 0.5, samples=10),  # steps do not count
        Phase(PhaseKind.TEST, 0, 2.0, 2.5, samples=10, metrics={"f1": 0.1}),
        Phase(PhaseKind.TEST, 1, 2.5, 3.0, samples=10, metrics={"f1": 0.9, "accuracy": "n/a"}),
    ]
    awkward = store.import_run(samples=counter_reset, phases=phases, tags={"gpu": "RTX 3090"})
    cpu_only = store.import_run(
        samples=frame([(t, "cpu", 20.0 + t, None, None, 1) for t in (0.0, 0.25, 0.5, 1.5)]),
        phases=[Phase(PhaseKind.EPOCH, 0, 0.0, 1.5)],  # no image count
        tags={"gpu": "not a GPU anyone sells"},
    )
    nothing = store.import_run(
        samples=frame([]), phases=[Phase(PhaseKind.EPOCH, 0, 0.0, 2.0, samples=5)]
    )
    offline_tags = {"gpu": "RTX 3090", "gflops": "0.6", "train_samples": "200",
                    "val_samples": "50", "batch_size": "16", "input_size": "64"}  # fmt: skip
    tagged = store.import_run(samples=counter_reset, phases=phases, tags=offline_tags)
    tags_only = store.import_run(samples=frame([]), phases=phases, tags=offline_tags)
    unpowered_gpu = store.import_run(  # gpu:1 reports its utilisation, never its power
        samples=frame([(t, d, 100.0 if d == "gpu:0" else None, None, u, 1)
                       for t in (0.0, 1.0, 2.0, 3.0) for d, u in (("gpu:0", 50.0), ("gpu:1", 90.0))]),
        phases=phases,
        tags=offline_tags,
    )  # fmt: skip
    table = run_table(store)
    reasons = assert_matches_summarize(store, table)
    # Every run but the tagged ones is left out, each for its reason.
    assert reasons == {"no gflops tag": 2, "no GPU": 1, "no GPU power readings": 1}
    rows = rows_of(table)
    assert rows.loc[tagged, "epoch_energy_j_gpu_ram"] > 0
    assert math.isnan(rows.loc[tags_only, "energy_j_gpu_ram"])
    assert rows.loc[unpowered_gpu, "gpu_util_pct"] == 70.0
    assert rows.loc[unpowered_gpu, "gpu_util_pct_metered"] == 50.0
    assert rows.loc[awkward, "epochs"] == 2 and rows.loc[awkward, "images"] == 200
    assert rows.loc[awkward, "f1"] == 0.9 and math.isnan(rows.loc[awkward, "accuracy"])
    assert rows.loc[awkward, "gpu_tdp_w"] == 350.0  # from the gpu tag
    # No interval in the runs table (imported): the finest mean spacing of a device's samples.
    assert rows.loc[awkward, "interval_s"] == pytest.approx(0.75)
    assert rows.loc[cpu_only, "interval_s"] == pytest.approx(0.5)
    assert math.isnan(rows.loc[cpu_only, "energy_j_gpu"]) and rows.loc[cpu_only, "energy_j"] > 0
    assert math.isnan(rows.loc[cpu_only, "images"]) and math.isnan(
        rows.loc[cpu_only, "j_per_image"]
    )
    assert math.isnan(rows.loc[cpu_only, "gpu_tdp_w"]) and math.isnan(
        rows.loc[cpu_only, "gpu_util_pct"]
    )
    assert math.isnan(rows.loc[nothing, "energy_j"]) and math.isnan(rows.loc[nothing, "interval_s"])
    assert rows.loc[nothing, "duration_s"] == 2.0  # import_run takes it from the phases


def test_device_energy_does_not_rely_on_sample_order(store: Store) -> None:
    rng = np.random.default_rng(3)
    n = 400
    for _ in range(2):  # shuffled input: the aggregates are settled from the time order
        frame = pd.DataFrame(
            {
                "t_s": rng.random(n) * 100,
                "device": rng.choice(["a", "b", "c"], n),
                "power_w": np.where(rng.random(n) < 0.1, np.nan, 100 + rng.random(n)),
                "energy_j": np.where(rng.random(n) < 0.5, np.nan, rng.random(n) * 1000),
                "util_pct": np.nan,
                "mem_used_mib": np.nan,
                "temp_c": np.nan,
                "source": "x",
                "measured": True,
            }
        )
        store.import_run(samples=frame)
    table = run_table(store).set_index("run_id")
    for run_id in (1, 2):
        from joulecast.energy import curves

        reference = sum(c.total_j for c in curves(store.samples(run_id)).values())
        assert table.loc[run_id, "energy_j"] == pytest.approx(reference, rel=1e-12)


# -- J/image as the paper defines it -------------------------------------------------------------

PAPER_RUNS = Path(joulecast.__file__).parent / "offline" / "data" / "paper_runs_train.csv"


def constant_run(
    store: Store, tags: dict[str, str], *, epochs: int = 3, samples: int | None = 100
) -> int:
    """A run of ``epochs`` epochs of 10 s at 200 W on gpu:0: 2,000 J an epoch."""
    readings = [(10.0 * k, "gpu:0", 200.0, None, 50.0, 1) for k in range(epochs + 1)]
    phases = [
        Phase(PhaseKind.EPOCH, k, 10.0 * k, 10.0 * (k + 1), samples=samples) for k in range(epochs)
    ]
    return store.import_run(samples=frame(readings), phases=phases, tags=tags)


def test_j_per_image_counts_training_and_validation_images(store: Store) -> None:
    run = constant_run(store, {"arch": "a", "train_samples": "100", "val_samples": "25"})
    row = rows_of(run_table(store)).loc[run]
    # 200 W x 30 s = 6,000 J over 3 x 100 training and 3 x 25 validation images.
    assert row["energy_j"] == pytest.approx(6000.0)
    assert (row["epochs"], row["images"], row["val_images"], row["images_processed"]) == (
        3, 300.0, 75.0, 375.0,
    )  # fmt: skip
    assert row["j_per_image"] == pytest.approx(6000.0 / 375)  # 16 J/image
    assert row["j_per_train_image"] == pytest.approx(6000.0 / 300)  # 20 J per training image
    assert row["s_per_image"] == pytest.approx(30.0 / 375)  # over the same images as J/image


@pytest.mark.parametrize(
    ("val_samples", "val_images", "j_per_image"),
    [
        (None, 0.0, 20.0),  # no tag: no validation counted, J/image = J/train image
        ("0", 0.0, 20.0),
        ("25", 75.0, 16.0),
        ("1e3", 3000.0, 6000.0 / 3300),
        ("abc", math.nan, math.nan),  # there, but not a number: unknown, not guessed
        ("", math.nan, math.nan),
        ("-5", math.nan, math.nan),
        ("inf", math.nan, math.nan),
        ("nan", math.nan, math.nan),
        ("1e308", math.nan, math.nan),  # 3 epochs overflow to inf, which would read as 0 J/image
    ],
)
def test_val_images_follow_the_val_samples_tag(
    store: Store, val_samples: str | None, val_images: float, j_per_image: float
) -> None:
    tags = {"arch": "a"} if val_samples is None else {"arch": "a", "val_samples": val_samples}
    run = constant_run(store, tags)
    row = rows_of(run_table(store)).loc[run]
    assert row["j_per_train_image"] == pytest.approx(20.0)
    for key, want in (("val_images", val_images), ("j_per_image", j_per_image)):
        assert math.isnan(row[key]) if math.isnan(want) else row[key] == pytest.approx(want)
    kept, log = clean(run_table(store))
    assert log.removed(EMPTY) == (() if math.isfinite(j_per_image) else (run,))
    assert len(kept) == (1 if math.isfinite(j_per_image) else 0)


def test_no_j_per_image_without_training_images(store: Store) -> None:
    """Epochs that trained on nothing are not normalised by their validation images alone."""
    zero = constant_run(store, {"val_samples": "25"}, samples=0)
    uncounted = constant_run(store, {"val_samples": "25"}, samples=None)
    rows = rows_of(run_table(store))
    assert rows.loc[zero, "images"] == 0 and rows.loc[zero, "val_images"] == 75
    assert math.isnan(rows.loc[uncounted, "images_processed"])
    for run in (zero, uncounted):
        assert math.isnan(rows.loc[run, "j_per_image"])
        assert math.isnan(rows.loc[run, "j_per_train_image"])
        assert math.isnan(rows.loc[run, "s_per_image"])


def test_clean_removes_the_same_runs_by_either_j_per_image(synthetic) -> None:
    """Within a group of equal splits the two differ by a constant: the same outliers."""
    _, table = synthetic
    kept, log = clean(table)
    by_train, log_train = clean(table.assign(j_per_image=table["j_per_train_image"]))
    assert list(kept["run_id"]) == list(by_train["run_id"])
    assert log.to_frame().equals(log_train.to_frame())


def test_the_papers_j_per_image_medians_come_out_of_its_runs(tmp_path: Path) -> None:
    """Section 4.1: VGG16 0.39 J/image, NASNet Mobile 0.34; section 4.2: MobileNet V2 in Cloud
    0.14, 31.61% less in Local N, 43.6% less in Local ML; from the shipped runs of the paper."""
    data = pd.read_csv(PAPER_RUNS)
    caltech = data[(data["dataset"] == "caltech101") & (data["train_samples"] == 3060)]
    runs = pd.concat([data[data["dataset"] == "chesslive"], caltech[:1]])
    with Store(tmp_path / "paper.db") as store:
        for row in runs.itertuples():
            # Two epochs of 60 s; the row's mean epoch energy (GPU + RAM) as gpu:0's power.
            power = row.epoch_energy_j / 60.0
            constant = frame([(t, "gpu:0", power, None, None, 1) for t in (0.0, 60.0, 120.0)])
            phases = [
                Phase(PhaseKind.EPOCH, k, 60.0 * k, 60.0 * (k + 1), samples=row.train_samples)
                for k in (0, 1)
            ]
            tags = {"arch": row.architecture, "dataset": row.dataset,
                    "environment": row.environment, "batch_size": str(row.batch_size),
                    "train_samples": str(row.train_samples),
                    "val_samples": str(row.val_samples)}  # fmt: skip
            store.import_run(samples=constant, phases=phases, tags=tags)
        table = run_table(store)
    kept, _ = clean(table)
    chess = kept[kept["dataset"] == "chesslive"]
    medians = chess.groupby(["architecture", "environment"])[["j_per_image", "j_per_train_image"]]
    paper = medians.median()["j_per_image"]
    assert round(paper["vgg16", "Cloud"], 2) == 0.39
    assert round(paper["nasnet_mobile", "Cloud"], 2) == 0.34
    assert round(paper["mobilenet_v2", "Cloud"], 2) == 0.14
    local_n = 1 - paper["mobilenet_v2", "Local Normal User"] / paper["mobilenet_v2", "Cloud"]
    local_ml = 1 - paper["mobilenet_v2", "Local ML Engineer"] / paper["mobilenet_v2", "Cloud"]
    assert local_n == pytest.approx(0.3161, abs=0.01)
    assert local_ml == pytest.approx(0.436, abs=0.01)
    # Training images alone give 0.55 and 0.48: the paper's figures count validation too.
    train_only = medians.median()["j_per_train_image"]
    assert round(train_only["vgg16", "Cloud"], 2) == 0.55
    assert round(train_only["nasnet_mobile", "Cloud"], 2) == 0.48
    # The factor between the two is (train + validation) / train: 34,010 / 23,807 = 1.4286 on
    # Chesslive, 9,144 / 3,060 = 2.988 on Caltech101.
    ratio = kept["j_per_train_image"] / kept["j_per_image"]
    sizes = (kept["train_samples"] + kept["val_samples"]) / kept["train_samples"]
    assert ratio.to_numpy() == pytest.approx(sizes.to_numpy(), rel=1e-12)
    factors = ratio.round(3).groupby(kept["dataset"]).unique()
    assert sorted(factors["chesslive"]) == [1.429]
    assert sorted(factors["caltech101"]) == [2.988]


# -- empty, filtered, bad input -----------------------------------------------------------------


def test_unmeasured_epochs_are_left_out_of_the_epoch_energy_and_void_j_per_image(
    store: Store,
) -> None:
    from tests.test_energy import _owner_gone, _sampler_died

    run = _sampler_died(store, [(k, k + 1) for k in range(8)])  # readings to 5 s: 3 unmeasured
    _owner_gone(store, run)
    row = run_table(store).iloc[0]
    assert row["epoch_energy_j_gpu_ram"] == pytest.approx(100.0)  # the five measured: 100 J
    assert row["images"] == 800 and math.isnan(row["j_per_image"])
    assert math.isnan(row["j_per_train_image"])
    assert row["energy_j"] == pytest.approx(500.0)


def test_store_without_runs_gives_an_empty_table(store: Store) -> None:
    table = run_table(store)
    assert table.empty and list(table.columns) == list(COLUMNS)
    kept, log = clean(table)
    assert kept.empty and log.start == log.end == 0
    assert (
        str(log)
        == "0 runs -> 0: 0 not completed, 0 empty values, 0 sampled slower than an epoch, 0 outliers"
    )


def test_study_and_run_id_filters(synthetic, tmp_path: Path) -> None:
    store, table = synthetic
    none = run_table(store, study="no such study")
    assert none.empty
    pd.testing.assert_series_equal(none.dtypes, table.dtypes)  # same columns, same types
    text = [
        "name",
        "status",
        "origin",
        "study",
        "study_key",
        "architecture",
        "dataset",
        "environment",
        "gpu",
        "tags",
        "hardware",
    ]
    assert list(table.columns[table.dtypes == np.dtype(object)]) == text
    assert set(table.columns[table.dtypes == np.int64]) == {"run_id", "epochs"}
    assert len(run_table(store.path, study="synthetic")) == len(table)
    some = [int(i) for i in table["run_id"].iloc[[3, 1, 20]]]
    picked = run_table(store, run_ids=some)
    assert list(picked["run_id"]) == sorted(some)
    pd.testing.assert_frame_equal(
        picked.drop(columns="tags").reset_index(drop=True),
        table[table["run_id"].isin(some)].drop(columns="tags").reset_index(drop=True),
    )
    with pytest.raises(InputError, match="no run with id 99999"):
        run_table(store, run_ids=[some[0], 99999])
    with pytest.raises(InputError, match="no such store file"):
        run_table(tmp_path / "missing.db")


# -- the synthetic store ------------------------------------------------------------------------


def test_synthetic_store_has_its_documented_answers(synthetic) -> None:
    store, table = synthetic
    assert len(table) == 6 * 10 + 5
    planted = table["tags"].map(lambda t: t.get("planted"))
    assert sorted(planted.dropna()) == ["empty", "failed", "failed", "outlier", "slow_sampling"]
    assert set(table.loc[table["status"] != "completed", "run_id"]) == set(
        table.loc[planted == "failed", "run_id"]
    )
    regular = table[planted.isna()]
    assert regular[list(COLUMNS)].drop(columns=["gpu_tdp_w"]).notna().all().all()
    by_group = regular.groupby(["architecture", "environment"])
    medians = by_group["j_per_image"].median()
    for env in ("cloud", "local"):
        assert medians["B", env] / medians["A", env] == pytest.approx(0.6, rel=0.03)
        assert medians["C", env] / medians["A", env] == pytest.approx(1.5, rel=0.03)
    # 2,000 training and 500 validation images an epoch: J/image is 2000/2500 of J/train image.
    assert medians["A", "cloud"] == pytest.approx(2.0 * 1.03 * 1.015 * 0.8, rel=0.03)
    assert medians["A", "local"] / medians["A", "cloud"] == pytest.approx(1.17, rel=0.03)
    train_medians = by_group["j_per_train_image"].median()
    assert train_medians["A", "cloud"] == pytest.approx(2.0 * 1.03 * 1.015, rel=0.03)
    assert (regular["j_per_image"] / regular["j_per_train_image"]).to_numpy() == pytest.approx(0.8)
    f1 = regular.groupby("architecture")["f1"].median()
    assert f1["C"] > f1["A"] > f1["B"]
    assert set(regular["gpu_tdp_w"]) == {400.0, 350.0}
    assert (regular["interval_s"] < regular["mean_epoch_s"]).all()
    assert sorted(table["tags"].map(lambda t: int(t["study_position"]))) == list(range(len(table)))
    assert assert_matches_summarize(store, table) == {"status failed": 2}


def test_synthetic_store_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="architectures"):
        synthetic_store(tmp_path / "a.db", architectures=("A", "Z"))
    with pytest.raises(InputError, match="runs_per_group"):
        synthetic_store(tmp_path / "b.db", runs_per_group=0)
    synthetic_store(tmp_path / "c.db", runs_per_group=1, planted=False).close()
    with pytest.raises(InputError, match="already holds runs"):
        synthetic_store(tmp_path / "c.db")


# -- clean ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("runs_per_group", "seed"), [(3, 0), (4, 1), (10, 2), (12, 3)])
def test_clean_removes_exactly_the_planted_runs(
    tmp_path: Path, runs_per_group: int, seed: int
) -> None:
    with synthetic_store(tmp_path / "s.db", runs_per_group=runs_per_group, seed=seed) as store:
        table = run_table(store)
    kept, log = clean(table)
    role = dict(zip(table["run_id"], table["tags"].map(lambda t: t.get("planted")), strict=True))
    by_reason = {step.reason: sorted(role[i] for i in step.run_ids) for step in log.steps}
    assert by_reason == {
        NOT_COMPLETED: ["failed", "failed"],
        EMPTY: ["empty"],
        SLOW_SAMPLING: ["slow_sampling"],
        OUTLIERS: ["outlier"],
    }
    assert [s.reason for s in log.steps] == [NOT_COMPLETED, EMPTY, SLOW_SAMPLING, OUTLIERS]
    assert log.start == len(table) and log.end == len(kept) == 6 * runs_per_group
    assert kept["tags"].map(lambda t: "planted" not in t).all()
    text = (
        f"{len(table)} runs -> {len(kept)}: 2 not completed, 1 empty values, "
        "1 sampled slower than an epoch, 1 outliers"
    )
    if runs_per_group < MIN_GROUP_SIZE:  # only the outlier's group has 4 runs
        assert len(log.unchecked_groups) == 5
        assert ("C", "synthetic", "cloud") not in log.unchecked_groups
        text += " (outliers not checked in 5 groups of fewer than 4 runs)"
    else:
        assert log.unchecked_groups == []
    assert str(log) == text
    summary = log.to_frame()
    assert list(summary.columns) == ["reason", "removed", "run_ids"]
    assert list(summary["removed"]) == [2, 1, 1, 1]
    assert list(summary["run_ids"].iloc[3]) == list(log.removed(OUTLIERS))


def test_clean_leaves_small_groups_alone(tmp_path: Path) -> None:
    with synthetic_store(tmp_path / "s.db", runs_per_group=2) as store:
        table = run_table(store)
    kept, log = clean(table)
    assert log.removed(OUTLIERS) == ()
    assert "outlier" in set(kept["tags"].map(lambda t: t.get("planted")))
    assert len(log.unchecked_groups) == 6
    assert ("C", "synthetic", "cloud") in log.unchecked_groups
    assert str(log).endswith(
        f"(outliers not checked in 6 groups of fewer than {MIN_GROUP_SIZE} runs)"
    )


def table_of(j_per_image: list[float], groups: list[str | None], **columns: list) -> pd.DataFrame:
    n = len(j_per_image)
    base = {
        "run_id": list(range(1, n + 1)),
        "status": ["completed"] * n,
        "energy_j": [100.0] * n,
        "images": [10.0] * n,
        "duration_s": [5.0] * n,
        "j_per_image": j_per_image,
        "interval_s": [0.1] * n,
        "mean_epoch_s": [1.0] * n,
        "architecture": groups,
        "dataset": ["d"] * n,
        "environment": ["e"] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_clean_rules_on_a_hand_made_table() -> None:
    table = table_of(
        # a: 40.0 is above Q3 + 1.5 IQR = 7.075 + 8.925; small: 3 runs; None: 4 alike; x: 5 runs.
        [1.0, 1.1, 1.2, 1.3, 9.0, 40.0] + [1.0, 1.0, 50.0] + [1.0] * 4 + [1.0] * 5,
        ["a"] * 6 + ["small"] * 3 + [None] * 4 + ["x"] * 5,
        status=["completed"] * 14 + ["interrupted", "running", "completed", "completed"],
        images=[10.0] * 16 + [np.inf, 10.0],
        interval_s=[0.1] * 17 + [np.nan],  # unknown interval: kept
        mean_epoch_s=[1.0] * 13 + [0.05] + [1.0] * 4,
    )
    kept, log = clean(table)
    assert log.removed(NOT_COMPLETED) == (15, 16)
    assert log.removed(EMPTY) == (17,)
    assert log.removed(SLOW_SAMPLING) == (14,)
    assert log.removed(OUTLIERS) == (6,)  # group "small" (3 runs, 50.0 among them) is left alone
    assert log.unchecked_groups == [("small", "d", "e"), ("x", "d", "e")]  # x: 1 run left
    assert 9 in set(kept["run_id"]) and len(kept) == 18 - 5
    assert list(kept.index) == list(range(len(kept)))
    # The missing architecture is a group of its own (4 runs, all alike): checked, kept.
    assert kept["architecture"].isna().sum() == 4
    # No grouping: one group of every run; Q3 + 1.5 IQR = 1.275 + 0.4125.
    _, whole = clean(table, group_by=())
    assert whole.removed(OUTLIERS) == (5, 6, 9)
    assert whole.unchecked_groups == []


def test_clean_checks_its_input() -> None:
    table = table_of([1.0], ["a"])
    with pytest.raises(InputError, match="lacks columns \\['mean_epoch_s'\\]"):
        clean(table.drop(columns="mean_epoch_s"))
    with pytest.raises(InputError, match="lacks columns \\['gpu'\\]"):
        clean(table, group_by=("gpu",))
    with pytest.raises(InputError, match="iqr_k"):
        clean(table, iqr_k=0)
    with pytest.raises(InputError, match="'energy_j': expected numbers"):
        clean(table.assign(energy_j="lots"))
    kept, log = clean(table)
    assert (
        isinstance(log, CleaningLog)
        and len(kept) == 1
        and log.unchecked_groups == [("a", "d", "e")]
    )
    with pytest.raises(InputError, match="reason 'typo'"):
        log.removed("typo")


# -- a whole synthetic study -------------------------------------------------------------------


def test_run_table_of_a_synthetic_study(tmp_path: Path) -> None:
    with synthetic_store(tmp_path / "s.db", runs_per_group=33, samples_per_run=1000) as store:
        table = run_table(store)
    assert len(table) == 6 * 33 + 5
    assert table["energy_j"].notna().all()
