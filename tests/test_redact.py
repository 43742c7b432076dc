"""offline.redact: secrets masked by the shape of the value, wherever they sit in a text."""

from __future__ import annotations

import logging

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from offline.redact import RedactingFormatter, redact, redact_tree

SCHEMES = st.sampled_from(["http", "https", "socks5h", "git+https", "s3", "ftp"])
LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
HOSTS = st.one_of(
    st.lists(LABEL, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
)
PORTS = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
PATHS = st.sampled_from(["", "/", "/simple", "/simple/torch/", "/a/b.whl"])
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# what may stand unescaped in a URL's user or password, '@' included (the last '@' ends it)
USERINFO = ALNUM + "._~%!$&()*+,;=-@"
SECRETS = st.text(ALNUM + "._~%+-", min_size=8)
PARAMS = st.sampled_from(
    ["token", "access_token", "api_key", "apikey", "key", "password", "passwd", "secret",
     "sig", "signature", "X-Amz-Signature", "X-Amz-Security-Token", "client_secret"]
)  # fmt: skip
CASED = PARAMS.flatmap(lambda p: st.sampled_from([p, p.upper(), p.lower(), p.title()]))
TEXT = st.text(max_size=40)
SHA256 = st.binary(min_size=32, max_size=32).map(bytes.hex)


@given(TEXT, SCHEMES, st.text(USERINFO, max_size=10), SECRETS, HOSTS, PORTS, PATHS, TEXT)
@example("pip: ", "https", "alice", "s3cret-pass", "mirror.local", "", "/simple", " x")
def test_a_urls_userinfo_never_shows_and_its_host_does(
    before: str, scheme: str, user: str, password: str, host: str, port: str, path: str, after: str
) -> None:
    secret = f"{user}:{password}"
    assume(password not in f"{before}{after}{scheme}{user}{host}{port}{path}")
    shown = redact(f"{before} {scheme}://{secret}@{host}{port}{path} {after}")
    assert password not in shown
    assert f"{scheme}://***@{host}{port}{path}" in shown


@given(TEXT, SCHEMES, HOSTS, PATHS, CASED, SECRETS, st.booleans(), TEXT)
@example("", "https", "bucket.s3.lan", "/a/b.whl", "X-Amz-Signature", "0a1b2c3d4e", True, "")
def test_a_secret_query_parameter_never_shows_and_the_host_does(
    before: str, scheme: str, host: str, path: str, name: str, secret: str, first: bool, after: str
) -> None:
    assume(secret not in f"{before}{after}{scheme}{host}{path}{name}page=2")
    query = f"?{name}={secret}&page=2" if first else f"?page=2&{name}={secret}"
    shown = redact(f"{before} {scheme}://{host}{path}{query} {after}")
    assert secret not in shown
    assert f"{scheme}://{host}{path}?" in shown and "page=2" in shown


@given(TEXT, st.sampled_from(["Bearer", "bearer", "Basic", "Token"]), SECRETS, TEXT)
def test_authorization_headers_never_show(before: str, kind: str, secret: str, after: str) -> None:
    assume(secret not in f"{before}{after}{kind}authorization")
    for line in (f"Authorization: {kind} {secret}", f'{{"authorization": "{kind} {secret}"}}'):
        assert secret not in redact(f"{before} {line} {after}")


@given(TEXT, SECRETS, TEXT)
def test_a_bare_bearer_token_never_shows(before: str, secret: str, after: str) -> None:
    assume(secret not in f"{before}{after}Bearer")
    assert secret not in redact(f"{before} Bearer {secret} {after}")


@given(TEXT, SHA256, TEXT, st.sampled_from(["", "sha256:", "#sha256=", "?sha256=", "--hash="]))
def test_sha256_digests_are_left_alone(before: str, digest: str, after: str, lead: str) -> None:
    text = f"{before} {lead}{digest} {after}"
    shown = redact(text)
    assert digest in shown
    assert redact(shown) == shown


@given(st.text())
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize(
    ("token", "kept"),
    [
        ("hf_" + "aBcD1234" * 4 + "xy", "hf_***"),
        ("sk-offline-" + "Ab3_" * 11, "sk-***"),
        ("sk-proj-" + "Q1w2E3r4" * 5, "sk-***"),
        ("ghp_" + "A1b2C3d4E5" * 4, "ghp_***"),
        ("github_pat_" + "11AB_cd" * 8, "github_pat_***"),
        ("glpat-" + "Xy12_ab-Z9" * 2, "glpat-***"),
        ("pypi-" + "AgEIcHlwaS5vcmc" * 4, "pypi-***"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIA***"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "eyJ***"),
    ],
)
def test_well_known_token_shapes(token: str, kept: str) -> None:
    assert redact(f"token: {token}, next") == f"token: {kept}, next"


@pytest.mark.parametrize(
    "text",
    [
        "basic checks pass; the token limit is 4096; monkey=1&sortkey=name",
        "sk-prod-mirror-eu-west-1.lan answers on 10.0.0.5:3128",
        "https://registry.lan/@scope/pkg and https://host/p?email=a@b.example",
        "HF_TOKEN is unset; hf_hub_download is not called",
        "file:///opt/deepseek-offline/bundle/simple",
    ],
)
def test_ordinary_report_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_private_key_block_is_masked_whole() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEF\n-----END PRIVATE KEY-----"
    assert redact(f"key:\n{pem}\nend") == "key:\n-----BEGIN PRIVATE KEY-----***\nend"


def test_trees_are_redacted_keys_and_values() -> None:
    tree = {"https://u:pw1@h/x": [("Bearer abcdefgh1",), 3, None], "n": {"v": "ok"}}
    assert redact_tree(tree) == {"https://***@h/x": [["Bearer ***"], 3, None], "n": {"v": "ok"}}


def test_the_log_formatter_redacts_arguments_and_tracebacks() -> None:
    try:
        raise RuntimeError("fetch https://u:tr4ceback@h failed")
    except RuntimeError:
        import sys

        exc = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "index %s", ("https://u:pw@h",), exc
    )
    line = RedactingFormatter(fmt="%(levelname)s %(message)s").format(record)
    assert line.startswith("ERROR index https://***@h")
    assert "RuntimeError: fetch https://***@h failed" in line and "tr4ceback" not in line
    inner = logging.Formatter("[%(name)s] %(message)s")
    assert RedactingFormatter(inner).format(record).startswith("[x] index https://***@h")
