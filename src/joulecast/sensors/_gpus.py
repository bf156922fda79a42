"""Which physical GPUs a CUDA program sees, from CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER.

CUDA numbers GPUs fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; NVML and nvidia-smi
number them by PCI bus. Entries of ``CUDA_VISIBLE_DEVICES`` are CUDA indices, ``GPU-`` UUID
prefixes or ``MIG-`` UUIDs; an invalid entry hides itself and everything after it, as in CUDA.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


class Every:
    """Says when ``period_s`` has passed since it last said so; the first time, at once.

    What a GPU sensor reads less often than power (utilization, memory, temperature).
    """

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._at = -float("inf")

    def due(self, now: float) -> bool:
        """Whether the period has passed at ``now``; if so, the next one starts at ``now``."""
        if now - self._at < self.period_s:
            return False
        self._at = now
        return True


@dataclass(frozen=True)
class GpuId:
    """How one physical GPU is known to NVML / nvidia-smi."""

    nvml_index: int
    uuid: str
    pci_bus_id: str
    name: str = ""
    compute_capability: tuple[int, int] | None = None


def _norm_bus(bus: str) -> str:
    # NVML prints an 8-digit domain ("00000000:3B:00.0"), CUDA a 4-digit one ("0000:3b:00.0").
    domain, _, rest = bus.strip().lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}" if rest else bus.strip().lower()


def cuda_order(gpus: list[GpuId], order: str | None = None) -> list[GpuId]:
    """``gpus`` in the order CUDA enumerates them under ``CUDA_DEVICE_ORDER`` = ``order``."""
    by_bus = sorted(gpus, key=lambda g: _norm_bus(g.pci_bus_id))
    if (order or "FASTEST_FIRST").upper() == "PCI_BUS_ID":
        return by_bus
    # Fastest first: higher compute capability first, PCI order among equals. Identical GPUs
    # (the common case) keep PCI order, which is what CUDA does.
    return sorted(by_bus, key=lambda g: tuple(-c for c in (g.compute_capability or (0, 0))))


def parse_visible(value: str | None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES``, or None when it is unset."""
    if value is None:
        return None
    return [e.strip() for e in value.split(",") if e.strip()]


def visible_index(entry: str) -> int | None:
    """The device index a ``CUDA_VISIBLE_DEVICES`` entry names (ASCII digits, maybe after a
    minus sign); None for a UUID or anything else (a digit of another script included)."""
    digits = entry[1:] if entry.startswith("-") else entry
    return int(entry) if digits.isascii() and digits.isdigit() else None


def select_visible(
    gpus: list[GpuId],
    visible: str | None = None,
    order: str | None = None,
    *,
    mig_parents: dict[str, str] | None = None,
) -> list[tuple[GpuId, bool]]:
    """The GPUs a CUDA program sees, in its order, each with a flag: shared through MIG.

    ``visible`` and ``order`` default to the environment. ``mig_parents`` maps MIG UUIDs to the
    UUID of the GPU they live on.
    """
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if order is None:
        order = os.environ.get("CUDA_DEVICE_ORDER")
    ordered = cuda_order(gpus, order)
    entries = parse_visible(visible)
    if entries is None:
        return [(g, False) for g in ordered]
    chosen: list[tuple[GpuId, bool]] = []
    for entry in entries:
        gpu: GpuId | None = None
        mig = False
        index = visible_index(entry)
        if index is not None:
            gpu = ordered[index] if 0 <= index < len(ordered) else None
        elif entry.upper().startswith("MIG-"):
            parent = (mig_parents or {}).get(entry)
            gpu = next((g for g in gpus if g.uuid == parent), None)
            mig = True
        else:
            prefix = entry if entry.upper().startswith("GPU-") else "GPU-" + entry
            matches = [g for g in gpus if g.uuid.upper().startswith(prefix.upper())]
            gpu = matches[0] if len(matches) == 1 else None
        if gpu is None:
            log.warning("CUDA_VISIBLE_DEVICES entry %r matches no GPU; it hides the rest", entry)
            break
        if any(g.uuid == gpu.uuid for g, _ in chosen):
            continue
        chosen.append((gpu, mig))
    return chosen
