from hrm.secrets import redact, redact_document


def test_credentials_in_a_uris_user_info_are_hidden_and_the_rest_kept():
    # A secret with "/" or "+" is percent-encoded in a URI, as pyarrow requires.
    assert redact("read s3://AKIAEXAMPLE:s3cr3t%2Fx%2By@bucket/runs/a failed") == "read s3://***@bucket/runs/a failed"


def test_credential_settings_in_a_uris_query_are_hidden_and_other_settings_kept():
    uri = "s3://bucket/a?endpoint_override=http://127.0.0.1:9000&access_key=AKIA&secret_key=abc/def&session_token=t"
    assert redact(uri) == ("s3://bucket/a?endpoint_override=http://127.0.0.1:9000&access_key=***&secret_key=***"
                           "&session_token=***")


def test_text_without_credentials_is_unchanged():
    text = "s3://bucket/a@b/step_1: tensor 'lm_head.weight' has shape (12, 32); see http://host:80/x"
    assert redact(text) == text


def test_every_string_of_a_document_is_redacted():
    doc = {"uri": "s3://k:s@b/x", "list": ["s3://k:s@b/y", 3], "n": 1.5}
    assert redact_document(doc) == {"uri": "s3://***@b/x", "list": ["s3://***@b/y", 3], "n": 1.5}
