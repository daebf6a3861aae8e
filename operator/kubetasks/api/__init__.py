"""The kubetasks API (group ``kubetasks.io``): pydantic models are the single source of truth.

The CRDs under ``crds/`` are generated from these models by :mod:`kubetasks.api.crd`.
"""

from kubetasks.api.common import GROUP, VERSION, API_VERSION, Condition, Duration, Machine, RetryPolicy
from kubetasks.api.machines import MACHINE_PRESETS, MachinePreset, resolve_machine
from kubetasks.api.task import Task, TaskSpec, TaskStatus
from kubetasks.api.taskrun import AttemptRecord, Phase, StepRecord, TaskRun, TaskRunSpec, TaskRunStatus

__all__ = [
    "GROUP", "VERSION", "API_VERSION", "Condition", "Duration", "Machine", "RetryPolicy",
    "MACHINE_PRESETS", "MachinePreset", "resolve_machine",
    "Task", "TaskSpec", "TaskStatus",
    "AttemptRecord", "Phase", "StepRecord", "TaskRun", "TaskRunSpec", "TaskRunStatus",
]
