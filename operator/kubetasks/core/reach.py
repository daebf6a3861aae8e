"""Namespaces the operator will not act in. Watching every namespace, it may create Jobs,
ServiceAccounts, Roles and RoleBindings anywhere: whoever may create a TaskRun in kube-system (or
in the operator's own namespace) must not have it make a Job there. The chart lists those
namespaces (KUBETASKS_REFUSED_NAMESPACES) unless allowSystemNamespaces; a run there fails at
once, with the reason in its status and an Event, rather than waiting unexplained."""

from __future__ import annotations

from kubetasks.core.trigger_policy import Refusal

NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"


def refused_namespaces(listed: str | None) -> frozenset[str]:
    """KUBETASKS_REFUSED_NAMESPACES: comma-separated names; empty refuses none."""
    return frozenset(n.strip() for n in (listed or "").split(",") if n.strip())


def refuse_namespace(namespace: str, refused: frozenset[str]) -> Refusal | None:
    if namespace not in refused:
        return None
    return Refusal(NAMESPACE_NOT_ALLOWED,
                   f"kubetasks does not run tasks in the namespace {namespace!r}: system namespaces and the "
                   "operator's own are refused (chart value allowSystemNamespaces=true allows them, or list "
                   "the namespace in watchNamespaces)")
