"""core.children's pod predicates: what the pod informer's events are acted on for."""

from kubetasks.core.children import POD_ENDED, pod_turned, pods_ended


def pod(phase: str | None) -> dict:
    return {"metadata": {"name": "p"}, "status": {"phase": phase} if phase else {}}


def test_a_pod_turns_into_a_phase_once():
    assert pod_turned(pod("Running"), pod("Succeeded"), {"Succeeded"})
    assert pod_turned(None, pod("Succeeded"), {"Succeeded"})  # first seen already ended (a relist)
    assert not pod_turned(pod("Succeeded"), pod("Succeeded"), {"Succeeded"})  # a later update of it
    assert not pod_turned(pod("Running"), pod("Failed"), {"Succeeded"})
    assert not pod_turned(pod("Running"), None, {"Succeeded"})  # deleted
    assert pod_turned(pod(None), pod("Failed"), POD_ENDED)
    assert not pod_turned(pod("Succeeded"), pod("Failed"), POD_ENDED)  # ended already


def test_pods_ended_needs_pods_and_every_one_ended():
    assert not pods_ended([])
    assert pods_ended([pod("Succeeded"), pod("Failed")])
    assert not pods_ended([pod("Succeeded"), pod("Running")])
