"""The contract between the operator and the in-pod runtime.

The operator passes a run's identity in environment variables; the runtime answers with its exit
code and a JSON termination message (``/dev/termination-log``, at most 4096 bytes), which the
kubelet copies into the pod's status, where the operator reads it. No extra API permissions needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ENV_RUN = "KUBETASKS_RUN"
ENV_RUN_UID = "KUBETASKS_RUN_UID"
ENV_NAMESPACE = "KUBETASKS_NAMESPACE"
ENV_TASK = "KUBETASKS_TASK"
ENV_ATTEMPT = "KUBETASKS_ATTEMPT"
ENV_ENTRYPOINT = "KUBETASKS_ENTRYPOINT"
ENV_PAYLOAD = "KUBETASKS_PAYLOAD"
ENV_CHECKPOINTS = "KUBETASKS_CHECKPOINTS"

EXIT_SUCCESS = 0
EXIT_RETRYABLE = 1
EXIT_PERMANENT = 78  # sysexits EX_CONFIG; RetryPolicy.permanentExitCodes defaults to it

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096
RESULT_LIMIT = 3072  # what is left of the termination message for a result, after the envelope


@dataclass(frozen=True)
class Report:
    """What an attempt reports when it ends."""

    outcome: str  # "succeeded" | "failed" | "sleeping"
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    wake_at: datetime | None = None

    def encode(self) -> str:
        body: dict[str, Any] = {"kubetasks": 1, "outcome": self.outcome}
        if self.outcome == "succeeded":
            body["result"] = self.result
        if self.error_message is not None:
            body["error"] = {"type": self.error_type, "message": self.error_message}
            if self.traceback:
                body["error"]["traceback"] = self.traceback
        if self.wake_at is not None:
            body["wakeAt"] = self.wake_at.isoformat()
        text = json.dumps(body, separators=(",", ":"), default=str)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT and "traceback" in body.get("error", {}):
            # The traceback is the one part that may be cut: keep its end, where the error is.
            tb = body["error"]["traceback"]
            room = TERMINATION_MESSAGE_LIMIT - (len(text.encode()) - len(tb.encode())) - 8
            body["error"]["traceback"] = "..." + tb[-max(room, 0):]
            text = json.dumps(body, separators=(",", ":"), default=str)
        return text

    @classmethod
    def decode(cls, text: str | None) -> Report | None:
        """Parses a termination message; None when it is not one of ours (plain commands)."""
        if not text:
            return None
        try:
            body = json.loads(text)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("kubetasks") != 1:
            return None
        error = body.get("error") or {}
        wake = body.get("wakeAt")
        return cls(
            outcome=str(body.get("outcome")),
            result=body.get("result"),
            error_type=error.get("type"),
            error_message=error.get("message"),
            traceback=error.get("traceback"),
            wake_at=datetime.fromisoformat(wake) if wake else None,
        )
