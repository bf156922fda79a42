"""CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER mapped to physical GPUs."""

from __future__ import annotations

import pytest

from joulecast.sensors._gpus import GpuId, _norm_bus, cuda_order, parse_visible, select_visible

# NVML order = PCI order. CUDA fastest-first: the two 8.6 cards (PCI order), then 7.5, then 6.1.
T4 = GpuId(0, "GPU-aaaa1111-0000", "00000000:1A:00.0", "Tesla T4", (7, 5))
A6000 = GpuId(1, "GPU-bbbb2222-0000", "00000000:3B:00.0", "RTX A6000", (8, 6))
P40 = GpuId(2, "GPU-cccc3333-0000", "00000000:5E:00.0", "Tesla P40", (6, 1))
A40 = GpuId(3, "GPU-bbbb4444-0000", "00000000:AF:00.0", "A40", (8, 6))
MIXED = [T4, A6000, P40, A40]


def names(chosen: list[tuple[GpuId, bool]]) -> list[str]:
    return [g.name for g, _ in chosen]


def test_norm_bus_matches_nvml_and_cuda_spellings() -> None:
    assert _norm_bus("00000000:3B:00.0") == "0000:3b:00.0"
    assert _norm_bus("0000:3b:00.0") == "0000:3b:00.0"
    assert _norm_bus(" 00000001:AF:00.0 ") == "0001:af:00.0"


def test_cuda_order_fastest_first_and_pci() -> None:
    shuffled = [A40, P40, T4, A6000]
    assert [g.name for g in cuda_order(shuffled)] == ["RTX A6000", "A40", "Tesla T4", "Tesla P40"]
    assert [g.name for g in cuda_order(shuffled, "FASTEST_FIRST")] == [
        "RTX A6000", "A40", "Tesla T4", "Tesla P40",
    ]
    assert [g.name for g in cuda_order(shuffled, "pci_bus_id")] == [
        "Tesla T4", "RTX A6000", "Tesla P40", "A40",
    ]


def test_identical_gpus_keep_pci_order_even_when_listed_otherwise() -> None:
    same = [GpuId(i, f"GPU-{i}", f"00000000:{bus}:00.0", "A100", (8, 0))
            for i, bus in enumerate(["C1", "07", "4E"])]
    assert [g.pci_bus_id[9:11] for g in cuda_order(same)] == ["07", "4E", "C1"]


def test_unknown_compute_capability_sorts_last() -> None:
    unknown = GpuId(4, "GPU-dddd", "00000000:01:00.0", "mystery", None)
    assert cuda_order([unknown, P40])[-1] is unknown


def test_parse_visible() -> None:
    assert parse_visible(None) is None
    assert parse_visible("") == []
    assert parse_visible(" 0, 2 ,,GPU-ab ") == ["0", "2", "GPU-ab"]


def test_unset_means_every_gpu_in_cuda_order() -> None:
    assert names(select_visible(MIXED, None, "")) == ["RTX A6000", "A40", "Tesla T4", "Tesla P40"]


def test_empty_string_means_no_gpu() -> None:
    assert select_visible(MIXED, "") == []


def test_indices_are_cuda_indices_under_each_order() -> None:
    assert names(select_visible(MIXED, "0,2", "FASTEST_FIRST")) == ["RTX A6000", "Tesla T4"]
    assert names(select_visible(MIXED, "0,2", "PCI_BUS_ID")) == ["Tesla T4", "Tesla P40"]
    assert names(select_visible(MIXED, "3,0", "PCI_BUS_ID")) == ["A40", "Tesla T4"]


def test_odd_entries_hide_the_rest_without_raising() -> None:
    # A digit of another script, a doubled minus sign, a negative index: no GPU from there on.
    assert names(select_visible(MIXED, "0,²,1", "FASTEST_FIRST")) == ["RTX A6000"]
    assert select_visible(MIXED, "--1") == [] and select_visible(MIXED, "-1,0") == []
    from joulecast.sensors.replay import visible_gpus

    assert visible_gpus(["gpu:0", "gpu:1"], "1,²,0") == {"gpu:1": "gpu:0"}
    assert visible_gpus(["gpu:0"], "--1") == {}


def test_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert names(select_visible(MIXED)) == ["A40"]
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert names(select_visible(MIXED)) == ["RTX A6000"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert select_visible(MIXED) == []


def test_uuid_prefixes() -> None:
    assert names(select_visible(MIXED, "GPU-cccc,GPU-aaaa1111-0000")) == ["Tesla P40", "Tesla T4"]
    assert names(select_visible(MIXED, "gpu-CCCC")) == ["Tesla P40"]  # case-insensitive


def test_ambiguous_uuid_prefix_is_invalid_and_hides_the_rest() -> None:
    # GPU-bbbb matches both the A6000 and the A40
    assert names(select_visible(MIXED, "2,GPU-bbbb,0", "PCI_BUS_ID")) == ["Tesla P40"]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("1,4,0", ["RTX A6000"]),  # index out of range
        ("1,-1,0", ["RTX A6000"]),  # negative index
        ("-1", []),
        ("GPU-ffff,0", []),  # no such UUID
        ("0,abc,1", ["Tesla T4"]),
    ],
)
def test_invalid_entry_hides_itself_and_everything_after(
    visible: str, expected: list[str]
) -> None:
    assert names(select_visible(MIXED, visible, "PCI_BUS_ID")) == expected


def test_repeated_gpu_counts_once() -> None:
    assert names(select_visible(MIXED, "0,GPU-aaaa,0,1", "PCI_BUS_ID")) == [
        "Tesla T4", "RTX A6000",
    ]


def test_mig_entry_maps_to_its_parent_and_is_flagged() -> None:
    mig = "MIG-1234abcd-0000-0000-0000-000000000000"
    chosen = select_visible(MIXED, mig, mig_parents={mig: A40.uuid})
    assert chosen == [(A40, True)]
    # without a known parent it is invalid and hides the rest
    assert select_visible(MIXED, f"{mig},0") == []
    # a plain entry is not shared
    assert select_visible(MIXED, "GPU-cccc") == [(P40, False)]
