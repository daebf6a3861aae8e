"""Pure helpers of kubetasks.kube (the API calls themselves are covered by the integration tests)."""

import pytest

from kubetasks.kube import resource_of


@pytest.mark.parametrize(("url", "resource"), [
    ("https://10.0.0.1:6443/apis/batch/v1/namespaces/ns/jobs/run-1-a1", "jobs"),
    ("https://h/api/v1/namespaces/ns/events", "events"),
    ("https://h/apis/kubetasks.io/v1alpha1/namespaces/ns/taskruns/r/status?fieldManager=x", "taskruns/status"),
    ("https://h/apis/kubetasks.io/v1alpha1/taskruns?labelSelector=a%3Db", "taskruns"),
    ("https://h/api/v1/namespaces/ns", "namespaces"),
    ("https://h/api/v1/namespaces", "namespaces"),
])
def test_resource_of_names_the_resource_and_subresource(url, resource):
    assert resource_of(url) == resource
