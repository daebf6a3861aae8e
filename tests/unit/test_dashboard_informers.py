"""The dashboard's scope: every namespace when the user may list there, else one, else a clear no."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubetasks import kube
from kubetasks.dashboard.informers import ScopeError, choose_scope, may_list


class Lister:
    """list_page as the user: allowed in the namespaces named (None: cluster-wide)."""

    def __init__(self, allowed: set[str | None], tasks_everywhere: bool = True, status: int = 403) -> None:
        self.allowed, self.tasks_everywhere, self.status = allowed, tasks_everywhere, status
        self.asked: list[tuple[str, str | None]] = []

    def list_page(self, resource: kube.Resource, namespace: str | None, limit: int = 500) -> dict[str, Any]:
        self.asked.append((resource.plural, namespace))
        if namespace not in self.allowed and not (resource == kube.TASKS and self.tasks_everywhere):
            raise ApiException(status=self.status, reason="Forbidden")
        return {"items": []}


def test_all_namespaces_when_the_user_may_list_them():
    lister = Lister({None})
    scope = choose_scope(lambda ns: may_list(lister, ns), "team-a")
    assert scope.everywhere and scope.note == "all namespaces"
    assert lister.asked == [("taskruns", None), ("tasks", None)]


def test_else_the_namespace_of_the_context_and_the_page_says_so():
    lister = Lister({"team-a"})
    scope = choose_scope(lambda ns: may_list(lister, ns), "team-a")
    assert scope.namespace == "team-a" and "namespace team-a only" in scope.note
    lister = Lister({"team-a"}, tasks_everywhere=False)
    assert choose_scope(lambda ns: may_list(lister, ns), "team-a").namespace == "team-a"


def test_else_a_clear_no():
    with pytest.raises(ScopeError, match="nor in namespace team-b"):
        choose_scope(lambda ns: may_list(Lister({"team-a"}), ns), "team-b")


def test_other_errors_are_not_taken_for_a_refusal():
    with pytest.raises(ApiException):
        may_list(Lister(set(), status=401), None)
