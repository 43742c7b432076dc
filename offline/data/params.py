"""The workspace's ``params.yaml``: every data parameter, its default, and one validation pass.

``offline init`` writes :func:`default_params` out in full, so a user sees (and DVC tracks) every
knob; :func:`load_params` reads it back and lists every problem at once (unknown keys included).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import (
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from offline.config import Strict, read_yaml, validate
from offline.data.decode import check_encoding
from offline.data.steps.registry import default_chain, registry
from offline.errors import ConfigError, NotFoundError

Format = Literal["auto", "jsonl", "csv", "parquet"]


class Columns(Strict):
    """Which input column feeds which canonical field.

    Unset text-bearing fields default to the canonical name (``text``, ``instruction``,
    ``messages``...); unset ``id``/``label``/``system`` mean the dataset has none.
    """

    id: str | None = None
    text: str | None = None
    label: str | None = None
    system: str | None = None
    instruction: str | None = None
    response: str | None = None
    messages: str | None = None
    role_key: str | None = None
    content_key: str | None = None
    time: str | None = None
    values: list[str] = []


class Dataset(Strict):
    """One input: a file or a directory of shards, its kind and its column mapping."""

    path: str
    kind: Literal["text", "instruction", "conversation", "tabular"]
    format: Format = "auto"
    # utf-8 also reads a leading byte-order mark; other files name their codec (gb18030, ...).
    encoding: str = "utf-8"
    columns: Columns = Columns()

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str) -> str:
        return check_encoding(name)


class ValidateParams(Strict):
    """Thresholds the validate stage enforces; a violated one fails the stage."""

    min_rows: int = Field(1, ge=0)
    max_null_rate: float = Field(0.05, ge=0, le=1)
    max_malformed_rate: float = Field(0.05, ge=0, le=1)
    max_type_error_rate: float = Field(0.05, ge=0, le=1)
    max_role_error_rate: float = Field(0.1, ge=0, le=1)
    max_record_bytes: int = Field(1_000_000, gt=0)


class TabularParams(Strict):
    """Time series: coercion, sliding-window median fill, outlier clipping."""

    steps: list[Literal["coerce", "fill", "outliers"]] = ["coerce", "fill", "outliers"]
    window: int = Field(5, ge=1)
    outliers: Literal["zscore", "iqr", "none"] = "iqr"
    zscore: float = Field(3.0, gt=0)
    iqr_k: float = Field(1.5, gt=0)
    max_rows: int = Field(5_000_000, gt=0)


DEFAULT_STEPS = default_chain()


class RayParams(Strict):
    """``clean.executor: ray``: the cluster to run on and what each task reserves."""

    # host:port of the head (`auto`: the cluster this host belongs to); unset: RAY_ADDRESS,
    # or else a Ray started for the run on this host's cores. `--ray-address` overrides it.
    address: str | None = None
    # Memory each task reserves on its node (Ray places no more tasks than that allows).
    memory_mb: int = Field(1024, gt=0)


class _CleanChain(Strict):
    """The cleaning chain: step order, batching, and (from the step registry) each step's own
    parameters, one section per step, then ``tabular``."""

    steps: list[str] = DEFAULT_STEPS
    batch_rows: int = Field(2048, gt=0)
    shard_rows: int = Field(100_000, gt=0)
    max_record_bytes: int = Field(1_000_000, gt=0)
    # Worker processes per dataset; `auto`: one per 8 MiB of input, up to the usable cores.
    # Any number gives the same outputs.
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # local: this host's worker processes (clean.workers); ray: tasks on a Ray cluster
    # (clean.ray). Both give the same outputs.
    executor: Literal["local", "ray"] = "local"
    ray: RayParams = RayParams()

    @field_validator("steps")
    @classmethod
    def _known_steps(cls, steps: list[str]) -> list[str]:
        known = registry()
        unknown = [s for s in steps if s not in known]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; known steps: {', '.join(known)}")
        if len(set(steps)) != len(steps):
            raise ValueError("a step is listed twice in clean.steps")
        return steps

    def step_params(self, name: str) -> Strict:
        """The section of step ``name``."""
        return cast("Strict", getattr(self, name))


if TYPE_CHECKING:

    class CleanParams(_CleanChain):
        tabular: TabularParams = TabularParams()

else:
    CleanParams = create_model(
        "CleanParams",
        __base__=_CleanChain,
        __module__=__name__,
        **{name: (spec.params, spec.params()) for name, spec in registry().items()},
        tabular=(TabularParams, TabularParams()),
    )
    CleanParams.__doc__ = _CleanChain.__doc__


class SplitParams(Strict):
    """Deterministic split by hash of (seed, duplicate cluster)."""

    seed: int = 13
    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        if self.validation + self.test >= 1:
            raise ValueError("split.validation + split.test must be below 1 (train gets the rest)")
        return self


class Params(Strict):
    """The data sections of ``params.yaml``; later stages add their own sections."""

    datasets: dict[str, Dataset]
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    clean: CleanParams = CleanParams()
    split: SplitParams = SplitParams()

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def sample_datasets(raw: str = "data/raw") -> dict[str, Dataset]:
    """The datasets ``offline data sample`` writes, mapped as ``offline init`` configures them."""
    return {
        "tickets": Dataset(
            path=f"{raw}/tickets.jsonl",
            kind="text",
            columns=Columns(id="id", text="text", label="category"),
        ),
        "conversations": Dataset(
            path=f"{raw}/conversations.jsonl",
            kind="conversation",
            columns=Columns(id="id", messages="messages", label="category"),
        ),
        "sensors": Dataset(
            path=f"{raw}/sensors.csv",
            kind="tabular",
            columns=Columns(time="timestamp", values=["temperature", "pressure"]),
        ),
    }


def default_params(raw: str = "data/raw") -> Params:
    return Params(datasets=sample_datasets(raw))


def dump_params(params: Params) -> dict[str, Any]:
    """Plain data for YAML: every field, defaults included, with the ``validate`` key."""
    data = params.model_dump(mode="json", by_alias=True)
    for ds in data["datasets"].values():
        ds["columns"] = {k: v for k, v in ds["columns"].items() if v not in (None, [])}
    return data


def parse_params(data: Any, where: str = "params.yaml") -> Params:
    """Validate already-loaded params; every problem is listed in one ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    # Sections of later stages (label, train, ...) are theirs to check.
    data_keys = {"datasets", "validate", "clean", "split"}
    return validate(
        Params,
        {k: v for k, v in data.items() if k in data_keys},
        where,
        fix=f"edit {where}; `offline data params` prints every key with its default",
    )


def load_params(path: Path) -> Params:
    """Read and validate ``params.yaml``."""
    if not path.is_file():
        raise NotFoundError(
            f"{path} not found", fix="run inside a workspace made by `offline init DIR`"
        )
    data = read_yaml(path, "params")
    return parse_params(data, str(path))
