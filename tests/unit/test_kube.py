"""Pure helpers of kubetasks.kube (the API calls themselves are covered by the integration tests)."""

import ssl

import certifi
import pytest
import urllib3

from kubetasks.kube import one_tls_context, resource_of


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


def test_one_tls_context_reads_the_ca_once_into_a_context_all_connections_share():
    manager = urllib3.PoolManager(cert_reqs=ssl.CERT_REQUIRED, ca_certs=certifi.where())
    one_tls_context(manager)
    context = manager.connection_pool_kw["ssl_context"]
    assert context.get_ca_certs() and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert manager.connection_pool_kw["ca_certs"] is None  # not read again by each connection
    one_tls_context(manager)
    assert manager.connection_pool_kw["ssl_context"] is context


def test_one_tls_context_keeps_an_insecure_kubeconfig_insecure():
    manager = urllib3.PoolManager(cert_reqs=ssl.CERT_NONE)
    one_tls_context(manager)  # check_hostname with CERT_NONE would raise on every connection
    context = manager.connection_pool_kw["ssl_context"]
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
