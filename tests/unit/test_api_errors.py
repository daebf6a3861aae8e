"""An API server's refusal, as a line that says which field and why (not its JSON)."""

import json

from hypothesis import given, strategies as st

from kubetasks.core.api_errors import api_error_message

JOB_REFUSED = {
    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
    "message": 'Job.batch "r-1" is invalid: spec.template.spec.containers[0].env[0].valueFrom: Invalid value: "": '
               "must specify one of: `configMapKeyRef`, `fieldRef`, `resourceFieldRef` or `secretKeyRef`",
    "reason": "Invalid",
    "details": {"name": "r-1", "group": "batch", "kind": "Job", "causes": [
        {"reason": "FieldValueInvalid", "field": "spec.template.spec.containers[0].env[0].valueFrom",
         "message": 'Invalid value: "": must specify one of: `configMapKeyRef`, `fieldRef`, `resourceFieldRef` or '
                    "`secretKeyRef`"}]},
    "code": 422,
}


def test_each_cause_says_its_field_and_why_without_the_json():
    for body in (JOB_REFUSED, json.dumps(JOB_REFUSED), json.dumps(JOB_REFUSED).encode()):
        text = api_error_message(body)
        assert text == ("spec.template.spec.containers[0].env[0].valueFrom: must specify one of: `configMapKeyRef`, "
                        "`fieldRef`, `resourceFieldRef` or `secretKeyRef`")


def test_several_causes_are_joined_and_counted():
    causes = [{"field": f"spec.f{i}", "message": f'Invalid value: "x\\"y{i}": too big', "reason": "FieldValueInvalid"}
              for i in range(8)]
    text = api_error_message({"kind": "Status", "details": {"causes": causes}})
    assert text.startswith("spec.f0: too big; spec.f1: too big") and text.endswith("; and 3 more")


def test_without_causes_the_status_message_is_used_and_anything_else_its_first_line():
    assert api_error_message({"kind": "Status", "message": "jobs.batch is forbidden", "reason": "Forbidden"}) == \
        "jobs.batch is forbidden"
    assert api_error_message("upstream connect error\nmore") == "upstream connect error"
    assert api_error_message(b"") == "no reason given"


@given(st.one_of(st.text(), st.binary(), st.dictionaries(st.text(), st.text())))
def test_any_body_gives_one_bounded_printable_line(body):
    text = api_error_message(body, limit=300)
    assert text and len(text) <= 300 and "\0" not in text and "\n" not in text
