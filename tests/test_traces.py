from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast.energy import summarize
from joulecast.errors import InputError
from joulecast.traces import (
    export_run,
    import_nvidia_smi,
    import_trace,
    iter_nvidia_smi,
    iter_trace,
    read_nvidia_smi,
    read_phases,
    read_trace,
)

POWER_RANGE = "expected a finite number from 0 to 5000"
GPU_RANGE = "expected a whole number from 0 to 1023"
INDEX_RANGE = "expected a whole number from -1000000000000000 to 1000000000000000"
SAMPLES_RANGE = "expected a whole number from 0 to 1000000000000000"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def trapezoid(t, p):
    t, p = np.asarray(t, float), np.asarray(p, float)
    return float(np.sum(np.diff(t) * (p[1:] + p[:-1]) / 2))


@pytest.fixture
def power_csv(tmp_path):
    rng = np.random.default_rng(1)
    rows = ["t_s,gpu_index,power_w,util_pct,mem_used_mib"]
    for i in range(200):
        for g in (0, 1):
            rows.append(f"{i * 0.5:.1f},{g},{100 + 80 * rng.random() + g * 20:.3f},{90 + g},{1000}")
    return write(tmp_path / "power.csv", "\n".join(rows) + "\n")


@pytest.fixture
def phases_csv(tmp_path):
    rows = ["index,start_s,end_s,samples"] + [
        f"{i},{i * 20.0},{i * 20 + 19.5},{3060}" for i in range(5)
    ]
    return write(tmp_path / "phases.csv", "\n".join(rows) + "\n")


def test_import_trace_gives_trapezoidal_energy(store, power_csv, phases_csv):
    run_id = import_trace(store, power_csv, phases_csv, name="imp", tags={"arch": "vgg16"})
    frame = pd.read_csv(power_csv)
    expected = sum(trapezoid(g["t_s"], g["power_w"]) for _, g in frame.groupby("gpu_index"))
    summary = summarize(store, run_id)
    assert summary.energy_j == pytest.approx(expected, rel=1e-12)
    by_device = summary.to_dict()["energy_j_by_device"]
    assert sum(by_device.values()) == pytest.approx(expected, rel=1e-12)
    assert set(summary.devices) == {"gpu:0", "gpu:1"}
    assert summary.status == "completed" and summary.tags == {"arch": "vgg16"}
    assert len(summary.epochs) == 5 and summary.epochs["samples"].tolist() == [3060] * 5
    first = frame[frame.t_s.between(0, 19.5)]
    e0 = sum(trapezoid(g["t_s"], g["power_w"]) for _, g in first.groupby("gpu_index"))
    assert summary.epochs["energy_j"].iloc[0] == pytest.approx(
        e0, rel=1e-9
    )  # boundaries on samples


def test_export_roundtrip(store, power_csv, phases_csv, tmp_path):
    run_id = import_trace(store, power_csv, phases_csv)
    out = tmp_path / "out"
    out.mkdir()
    power, phases = export_run(store, run_id, out)
    again = import_trace(store, power, phases)
    a, b = summarize(store, run_id), summarize(store, again)
    assert b.energy_j == pytest.approx(a.energy_j, rel=1e-9)
    assert b.epochs["energy_j"].tolist() == pytest.approx(a.epochs["energy_j"].tolist(), rel=1e-9)


def test_export_parquet(store, power_csv, tmp_path):
    pytest.importorskip("pyarrow")
    run_id = import_trace(store, power_csv)
    power, phases = export_run(store, run_id, tmp_path, format="parquet")
    frame = pd.read_parquet(power)
    assert len(frame) == 400 and {"t_s", "device", "power_w", "measured"} <= set(frame.columns)
    assert pd.read_parquet(phases).empty


BAD_POWER = [
    ("", "empty file"),
    ("t_s,gpu_index\n0,0\n", "missing column 'power_w'"),
    ("t_s,power_w\n0,1\n", "missing column 'gpu_index' or 'device'"),
    ("t_s,gpu_index,power_w\n", "no data rows"),
    (
        "t_s,gpu_index,power_w\n0,0,100\n1,0,abc\n",
        f"line 3: column 'power_w' of gpu:0: 'abc': {POWER_RANGE}",
    ),
    ("t_s,gpu_index,power_w\n0,0,100\n1,0\n", "line 3: expected 3 fields, got 2"),
    ("t_s,gpu_index,power_w\n0,0,100\n2,0,100\n1,0,100\n", "line 4: t_s 1 goes backwards"),
    ("t_s,gpu_index,power_w\n0,0,100\n,0,100\n", "line 3: column 't_s' is empty"),
    ("t_s,gpu_index,power_w\n0,x,100\n", f"line 2: column 'gpu_index': 'x': {GPU_RANGE}"),
    # Digits that str.isdigit() accepts and int() does not.
    ("t_s,gpu_index,power_w\n0,\u00b2,100\n", f"column 'gpu_index': '\u00b2': {GPU_RANGE}"),
    ("t_s,gpu_index,power_w\n0,0,-5\n", f"line 2: column 'power_w' of gpu:0: '-5': {POWER_RANGE}"),
    ("t_s,gpu_index,power_w\n0,0,inf\n", f"line 2: column 'power_w' of gpu:0: 'inf': {POWER_RANGE}"),
    ('t_s,gpu_index,power_w\n0,0,"100\n', "malformed CSV"),
]


@pytest.mark.parametrize(("text", "message"), BAD_POWER)
def test_bad_power_csv(store, tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as info:
        import_trace(store, path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert store.runs().empty  # nothing written


BAD_PHASES = [
    ("index,start_s\n0,1\n", "missing column 'end_s'"),
    ("index,start_s,end_s\n0,5,1\n", "line 2: end 1 is before start 5"),
    ("index,start_s,end_s\nx,0,1\n", f"line 2: column 'index': 'x': {INDEX_RANGE}"),
    ("index,start_s,end_s\n--1,0,1\n", f"line 2: column 'index': '--1': {INDEX_RANGE}"),
    ("index,start_s,end_s\n\u00b2,0,1\n", f"line 2: column 'index': '\u00b2': {INDEX_RANGE}"),
    ("index,start_s,end_s,kind\n0,0,1,batch\n", "column 'kind': 'batch' (expected epoch, step or test)"),
    ("index,start_s,end_s\n0,0,1\n0,1,2\n", "line 3: epoch 0 appears twice"),
    ("index,start_s,end_s,samples\n0,0,1,1.5\n", f"column 'samples': '1.5': {SAMPLES_RANGE}"),
    ("index,start_s,end_s,samples\n0,0,1,\u00b2\n", f"column 'samples': '\u00b2': {SAMPLES_RANGE}"),
]


@pytest.mark.parametrize(("text", "message"), BAD_PHASES)
def test_bad_phases_csv_writes_no_run(store, power_csv, tmp_path, text, message):
    path = write(tmp_path / "phases.csv", text)
    with pytest.raises(InputError, match=None) as info:
        import_trace(store, power_csv, path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert store.runs().empty


def test_missing_file(store, tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_trace(tmp_path / "nope.csv")


def test_device_column_and_optional_fields(tmp_path):
    path = write(
        tmp_path / "p.csv",
        "t_s,device,power_w,energy_j,source,measured\n0,cpu:0,10,0,rapl,true\n1,cpu:0,,12,rapl,true\n"
        "0,ram,3,,ram-model,false\n1,ram,3,,ram-model,false\n",
    )
    frame = read_trace(path)
    assert frame["device"].tolist() == ["cpu:0", "cpu:0", "ram", "ram"]
    assert frame["measured"].tolist() == [True, True, False, False]
    assert np.isnan(frame["power_w"].iloc[1])


SMI_UNITS = """timestamp, index, name, power.draw [W], utilization.gpu [%], memory.used [MiB]
2024/03/01 10:00:00.000, 0, NVIDIA GeForce RTX 3090, 100.00 W, 50 %, 1000 MiB
2024/03/01 10:00:00.010, 1, NVIDIA GeForce RTX 3090, 200.00 W, 60 %, 2000 MiB
2024/03/01 10:00:00.500, 0, NVIDIA GeForce RTX 3090, 300.00 W, 70 %, 1000 MiB
2024/03/01 10:00:00.510, 1, NVIDIA GeForce RTX 3090, [N/A], 60 %, 2000 MiB
2024/03/01 10:00:01.000, 0, NVIDIA GeForce RTX 3090, 100.00 W, 50 %, 1000 MiB
2024/03/01 10:00:01.010, 1, NVIDIA GeForce RTX 3090, 200.00 W, 60 %, 2000 MiB
"""

SMI_NOUNITS = """timestamp, index, power.draw [W], utilization.gpu [%]
2024/03/01 10:00:00.000, 0, 100.00, 50
2024/03/01 10:00:00.500, 0, 300.00, 70
2024/03/01 10:00:01.000, 0, 100.00, 50
"""


def test_nvidia_smi_with_units_interleaved(store, tmp_path):
    path = write(tmp_path / "smi.csv", SMI_UNITS)
    frame, first = read_nvidia_smi(path)
    assert first.year == 2024 and set(frame["device"]) == {"gpu:0", "gpu:1"}
    run_id = import_nvidia_smi(store, path)
    s = summarize(store, run_id)
    assert s.devices["gpu:0"].energy_j == pytest.approx(0.5 * 200 + 0.5 * 200)
    assert s.devices["gpu:1"].energy_j == pytest.approx(1.0 * 200)  # the N/A sample is skipped
    assert s.energy_j == pytest.approx(400.0)


def test_nvidia_smi_without_units_and_timed_phases(store, tmp_path):
    log = write(tmp_path / "smi.csv", SMI_NOUNITS)
    phases = write(
        tmp_path / "ph.csv",
        "index,start_time,end_time\n0,2024/03/01 10:00:00.000,2024/03/01 10:00:00.500\n"
        "1,2024/03/01 10:00:00.500,2024/03/01 10:00:01.000\n",
    )
    run_id = import_nvidia_smi(store, log, phases)
    s = summarize(store, run_id)
    assert s.energy_j == pytest.approx(200.0)
    assert s.epochs["energy_j"].tolist() == pytest.approx([100.0, 100.0])


BAD_SMI = [
    ("", "empty file"),
    ("timestamp, index\n2024/03/01 10:00:00.000, 0\n", "missing column 'power.draw'"),
    (
        "timestamp, index, power.draw [W]\nyesterday, 0, 1 W\n",
        "line 2: 'yesterday' is not a timestamp",
    ),
    (
        "timestamp, index, power.draw [W]\n2024/03/01 10:00:00.000, 0, lots W\n",
        f"line 2: column 'power.draw' of gpu:0: 'lots': {POWER_RANGE}",
    ),
    (
        "timestamp, index, power.draw [W]\n2024/03/01 10:00:01.000, 0, 1 W\n2024/03/01 10:00:00.000, 0, 1 W\n",
        "line 3: timestamp '2024/03/01 10:00:00.000' goes backwards",
    ),
    (
        "timestamp, power.draw [W]\n2024/03/01 10:00:00.000, 1 W\n2024/03/01 10:00:00.000, 2 W\n",
        "no index, uuid or pci.bus_id column",
    ),
    ("timestamp, index, power.draw [W]\n", "no data rows"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SMI)
def test_bad_nvidia_smi(store, tmp_path, text, message):
    path = write(tmp_path / "smi.csv", text)
    with pytest.raises(InputError) as info:
        import_nvidia_smi(store, path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert store.runs().empty


def test_read_phases_kinds(tmp_path):
    path = write(
        tmp_path / "p.csv", "index,start_s,end_s,kind,samples\n0,0,1,epoch,10\n0,0,0.5,step,5\n"
    )
    phases = read_phases(path)
    assert [(p.kind.value, p.index, p.samples) for p in phases] == [
        ("epoch", 0, 10),
        ("step", 0, 5),
    ]
    assert json.dumps([p.start_s for p in phases]) == "[0.0, 0.0]"


def test_test_phase_in_summary(store, power_csv, tmp_path):
    from joulecast.records import Phase, PhaseKind

    run_id = import_trace(store, power_csv)
    store.write_phases(run_id, [Phase(PhaseKind.TEST, 0, 10.0, 20.0, 50, {"f1": 0.5, "average": "macro"})])
    test = summarize(store, run_id).to_dict()["test"]
    assert test["metrics"] == {"f1": 0.5, "average": "macro"} and test["samples"] == 50
    assert test["duration_s"] == pytest.approx(10.0) and test["energy_j"] > 0


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_export_in_chunks_writes_the_same_files(store, power_csv, phases_csv, tmp_path, format):
    if format == "parquet":
        pytest.importorskip("pyarrow")
    run_id = import_trace(store, power_csv, phases_csv)
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    whole.mkdir()
    chunked.mkdir()
    a = export_run(store, run_id, whole, format=format)
    b = export_run(store, run_id, chunked, format=format, chunk_rows=7)
    read = pd.read_parquet if format == "parquet" else pd.read_csv
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(read(x), read(y))
    if format == "csv":
        assert a[0].read_bytes() == b[0].read_bytes()
    frame = read(b[0])
    assert len(frame) == 400 and frame["t_s"].is_monotonic_increasing
    assert list(tmp_path.glob("*/.run-*")) == []  # no temporary file left


def test_export_of_a_run_without_samples(store, tmp_path):
    run_id = store.create_run()
    power, _ = export_run(store, run_id, tmp_path)
    assert power.read_text().splitlines() == [
        "t_s,device,power_w,energy_j,util_pct,mem_used_mib,temp_c,source,measured"
    ]
    if importlib.util.find_spec("pyarrow"):
        power, _ = export_run(store, run_id, tmp_path, format="parquet")
        assert pd.read_parquet(power).empty


def test_import_trace_in_chunks_writes_the_same_run(store, power_csv, phases_csv):
    whole = import_trace(store, power_csv, phases_csv)
    chunked = import_trace(store, power_csv, phases_csv, chunk_rows=7)
    pd.testing.assert_frame_equal(store.samples(chunked), store.samples(whole))
    a, b = summarize(store, whole), summarize(store, chunked)
    assert b.energy_j == pytest.approx(a.energy_j, rel=1e-12)
    assert b.epochs["energy_j"].tolist() == pytest.approx(a.epochs["energy_j"].tolist(), rel=1e-12)
    chunks = list(iter_trace(power_csv, chunk_rows=7))
    assert [len(c) for c in chunks] == [7] * 57 + [1]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), read_trace(power_csv))


def test_a_bad_line_in_a_later_chunk_writes_no_run(store, tmp_path):
    lines = ["t_s,gpu_index,power_w"] + [f"{i},0,100" for i in range(20)]
    lines[15] = "14,0,oops"
    path = write(tmp_path / "p.csv", "\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        import_trace(store, path, chunk_rows=4)
    assert str(info.value) == f"{path}: line 16: column 'power_w' of gpu:0: 'oops': {POWER_RANGE}"
    no_power = write(tmp_path / "n.csv", "t_s,gpu_index,power_w\n" + "0,0,\n" * 9)
    with pytest.raises(InputError, match="no power_w values in any row"):
        import_trace(store, no_power, chunk_rows=4)
    assert store.runs().empty
    late_power = write(
        tmp_path / "l.csv",
        "t_s,gpu_index,power_w\n" + "".join(f"{i},0,{'' if i < 8 else 100}\n" for i in range(10)),
    )
    run_id = import_trace(store, late_power, chunk_rows=4)
    assert summarize(store, run_id).energy_j == pytest.approx(100.0)


def test_nvidia_smi_in_chunks(store, tmp_path):
    path = write(tmp_path / "smi.csv", SMI_UNITS)
    frame, first = read_nvidia_smi(path)
    chunks, again = iter_nvidia_smi(path, chunk_rows=4)
    assert again == first
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), frame)
    whole, chunked = import_nvidia_smi(store, path), import_nvidia_smi(store, path, chunk_rows=2)
    pd.testing.assert_frame_equal(store.samples(chunked), store.samples(whole))
    assert summarize(store, chunked).energy_j == pytest.approx(400.0)
    bad = write(tmp_path / "bad.csv", SMI_UNITS.replace("300.00 W", "lots W"))
    with pytest.raises(InputError) as info:
        import_nvidia_smi(store, bad, chunk_rows=1)  # line 4: in the third chunk
    assert str(info.value) == f"{bad}: line 4: column 'power.draw' of gpu:0: 'lots': {POWER_RANGE}"
    assert len(store.runs()) == 2
