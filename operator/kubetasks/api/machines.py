"""Machine presets: named CPU/memory sizes, as hosted task products offer them."""

from __future__ import annotations

from typing import Any, NamedTuple

from kubetasks.api.common import Machine


class MachinePreset(NamedTuple):
    cpu: str
    memory: str


MACHINE_PRESETS: dict[str, MachinePreset] = {
    "micro": MachinePreset("250m", "256Mi"),
    "small-1x": MachinePreset("500m", "512Mi"),
    "small-2x": MachinePreset("1", "1Gi"),
    "medium-1x": MachinePreset("1", "2Gi"),
    "medium-2x": MachinePreset("2", "4Gi"),
    "large-1x": MachinePreset("4", "8Gi"),
    "large-2x": MachinePreset("8", "16Gi"),
}
DEFAULT_MACHINE = "small-1x"


def resolve_machine(*machines: Machine | None) -> MachinePreset:
    """CPU and memory for a pod, from the most specific machine setting to the least.

    Each field is taken from the first machine that sets it, explicitly or by preset, so a run's
    ``memory: 2Gi`` override keeps the Task's CPU. Falls back to the small-1x preset.
    """
    cpu = memory = None
    for machine in machines:
        if machine is None:
            continue
        preset = MACHINE_PRESETS[machine.preset] if machine.preset else None
        cpu = cpu or machine.cpu or (preset.cpu if preset else None)
        memory = memory or machine.memory or (preset.memory if preset else None)
    default = MACHINE_PRESETS[DEFAULT_MACHINE]
    return MachinePreset(cpu or default.cpu, memory or default.memory)


def machine_of(machine: Machine | dict[str, Any] | str | None) -> Machine | None:
    """A Machine from a preset name ("small-2x"), a dict or a Machine, as the SDK takes it."""
    if machine is None or isinstance(machine, Machine):
        return machine
    if isinstance(machine, str):
        return Machine(preset=machine)  # type: ignore[arg-type]  # pydantic validates the name
    return Machine.model_validate(machine)


def machine_label(machine: Machine | None) -> str:
    """A short description for printer columns: the preset name or "cpu/memory"."""
    if machine is None:
        return DEFAULT_MACHINE
    if machine.preset and not (machine.cpu or machine.memory):
        return machine.preset
    size = resolve_machine(machine)
    return f"{size.cpu}/{size.memory}"
