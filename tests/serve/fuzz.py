"""Schemathesis over every operation of the server's OpenAPI schema, valid and invalid requests,
with strings schemathesis itself never generates (its alphabet leaves out lone surrogates):
lone surrogates, control characters, other odd categories, and long runs of one character."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import strategies as st

SURROGATES = st.characters(categories=["Cs"])
HOSTILE = st.one_of(
    st.text(SURROGATES, min_size=1, max_size=4),
    st.text(st.characters(categories=["Cc"]), min_size=1, max_size=16),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Co", "Mn", "Zl", "Zs"]), min_size=1),
    st.builds(operator.mul, st.characters(), st.sampled_from([300, 5000, 60_000])),
)


def spoil(value: Any, data: st.DataObject) -> Any:
    """``value`` with each of its strings kept, replaced by a hostile one, or appended to."""
    if isinstance(value, str):
        how = data.draw(st.sampled_from(["keep", "replace", "append"]))
        if how == "keep":
            return value
        hostile = data.draw(HOSTILE)
        return hostile if how == "replace" else value + hostile
    if isinstance(value, list):
        return [spoil(v, data) for v in value]
    if isinstance(value, dict):
        return {k: spoil(v, data) for k, v in value.items()}
    return value


NOT_JSON = object()


def send(client: Any, request: dict[str, Any]) -> Any:
    """A request as schemathesis serializes it for ``requests``, sent with ``client``; a JSON
    body goes with ``\\uXXXX`` escapes, so lone surrogates travel as JSON allows."""
    body = request.get("json", NOT_JSON)
    return client.request(
        request["method"],
        request["url"],
        params=request.get("params"),
        headers=request.get("headers"),
        content=request.get("data") if body is NOT_JSON else json.dumps(body).encode(),
    )


@dataclass
class Findings:
    statuses: dict[str, set[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, key: str, request: dict[str, Any], response: Any) -> None:
        """Note the status; a 5xx, or a stream that does not end in ``[DONE]``, is a failure."""
        self.statuses.setdefault(key, set()).add(response.status_code)
        sent = f"{key} {json.dumps(request.get('json'))[:300]}"
        if response.status_code >= 500:
            self.failures.append(f"{sent}: {response.status_code} {response.text[:300]}")
        streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        if streamed and not response.text.endswith("data: [DONE]\n\n"):
            self.failures.append(f"{sent}: the stream ends {response.text[-300:]!r}")


def fuzz(
    schema: Any,
    client: Any,
    max_examples: int,
    headers: dict[str, str] | None = None,
    focus: dict[str, st.SearchStrategy[Any]] | None = None,
) -> Findings:
    """Every operation of ``schema`` sent with ``client`` (an httpx client or FastAPI's
    TestClient; ``headers`` on top of the generated ones), in schemathesis' positive and
    negative modes, half of the JSON bodies with hostile strings spliced in.

    ``focus`` draws some values of keys a generated body already has (a served model name, a
    small ``max_tokens``), so that more cases get past the 404s and 422s to the model."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    found = Findings()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=max_examples,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
            def check(case: Any, data: st.DataObject) -> None:
                request = case.as_transport_kwargs(base_url=str(client.base_url), headers=headers)
                body = request.get("json")
                for key, values in (focus or {}).items():
                    if isinstance(body, dict) and key in body and data.draw(st.booleans()):
                        body[key] = data.draw(values)
                if "json" in request and data.draw(st.booleans()):
                    # after serializing: schemathesis cannot validate a body with surrogates
                    request["json"] = spoil(request["json"], data)
                key = f"{case.method} {case.path}"
                try:
                    response = send(client, request)
                except httpx.LocalProtocolError:  # a header h11 will not send: not a request
                    return
                except httpx.RemoteProtocolError as exc:  # e.g. a stream cut off half way
                    found.failures.append(f"{key} {json.dumps(request.get('json'))[:300]}: {exc}")
                    return
                found.record(key, request, response)

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid: a GET without parameters
                assert mode is GenerationMode.NEGATIVE and operation.method == "get"
    return found
