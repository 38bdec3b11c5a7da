"""JobSpec: the validated request body of `POST /jobs` and `POST /start`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails

from chunking import workload
from chunking.settings import get_settings
from chunking.workload import WorkloadFields

MAX_CHUNKS = 100_000
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Priority = Literal["high", "normal", "low"]


def _unicode_text(value: str) -> str:
    # JSON's "\ud800" decodes to a lone surrogate: no UTF-8 store or event can carry it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        message = f"is not valid Unicode text (character {err.start} is a lone surrogate)"
        raise ValueError(message) from None
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]
# A JSON body's numbers are numbers: pydantic's lax mode would take `true` as 1 and "1_0" as 10.
WholeNumber = Annotated[int, Strict()]


def _decimal_key(value: Any) -> Any:
    # JSON's object keys are strings: a number there is plain decimal digits, nothing else
    # (int() would take "1_0", "+1", " 1" and other scripts' digits). An int comes from Python.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value):
        return int(value)
    raise ValueError("must be a whole number in plain decimal digits")


# An object key that stands for a number (a chunk index).
NumberKey = Annotated[int, BeforeValidator(_decimal_key)]
# A share of a job's items, as "12.5%".
PERCENT_PATTERN = r"^(100(\.0+)?|\d{1,2}(\.\d+)?)%$"
FailedItemsLimit = (
    Annotated[int, Strict(), Field(ge=0)] | Annotated[str, Field(pattern=PERCENT_PATTERN)]
)


def new_job_id() -> str:
    """A fresh job id that matches JOB_ID_PATTERN."""
    return uuid.uuid4().hex


def chunk_count(total_items: int, chunk_size: int) -> int:
    return -(-total_items // chunk_size)


class JobSpec(BaseModel):
    """What to run: the fields every job has, and those of its workload, in one flat body.
    Unknown fields are refused, each problem named by its field, so a typo never silently
    changes a job."""

    # The workload's own fields are validated by its `Fields` model (chunking.workload), chosen
    # by `workload`, and ride beside these (`extra`: `model_dump` gives the flat body back);
    # `own` types them. A field of another workload, or of none, is refused naming it.
    model_config = ConfigDict(extra="allow", frozen=True)

    job_id: str | None = Field(
        None,
        pattern=JOB_ID_PATTERN,
        description="Idempotency key: the same job_id twice starts one job.",
    )
    total_items: WholeNumber = Field(
        default_factory=lambda: get_settings().total_items, ge=1, le=10_000_000
    )
    chunk_size: WholeNumber = Field(
        default_factory=lambda: get_settings().chunk_size, ge=1, le=100_000
    )
    workload: str = Field(
        "simulate", description="What each chunk does: simulate, or llm (see the README)."
    )
    priority: Priority = Field(
        "normal", description="high runs ahead of waiting normal and low chunks (both paths)."
    )
    tenant: str = Field(
        "default",
        pattern=JOB_ID_PATTERN,
        description="Whose job: each tenant's chunks share one concurrency limit (local path).",
    )
    callback_url: Text | None = Field(
        None,
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="POSTed the signed summary when the job completes (public http(s) only).",
    )
    max_failed_items: FailedItemsLimit | None = Field(
        None,
        description=(
            "A failure threshold: past this many items without an answer (a count, or a share "
            'of the job\'s items as "10%"), the job stops early as failed.'
        ),
    )
    max_cost_usd: Annotated[float, Strict()] | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description=(
            "A spend cap (workloads that call a model): no model call begins once the job's "
            "estimated spend and its calls in flight would pass it; the job then stops."
        ),
    )
    _own: WorkloadFields = PrivateAttr(default_factory=WorkloadFields)

    @field_validator("chunk_size")
    @classmethod
    def _not_too_many_chunks(cls, chunk_size: int, info: ValidationInfo) -> int:
        total = info.data.get("total_items")
        if total is not None and chunk_count(total, chunk_size) > MAX_CHUNKS:
            raise ValueError(
                f"total_items={total} with chunk_size={chunk_size} makes "
                f"{chunk_count(total, chunk_size)} chunks; at most {MAX_CHUNKS} are allowed, "
                f"so chunk_size must be at least {chunk_count(total, MAX_CHUNKS)}"
            )
        return chunk_size

    @field_validator("workload")
    @classmethod
    def _known_workload(cls, name: str) -> str:
        if name not in workload.names():
            raise ValueError(f"{name!r} is no workload: use one of {', '.join(workload.names())}")
        return name

    def failed_items_limit(self, total_items: int) -> int | None:
        """`max_failed_items` as a count of the job's `total_items` (a share rounded down)."""
        limit = self.max_failed_items
        if limit is None or isinstance(limit, int):
            return limit
        return int(total_items * float(limit[:-1]) / 100)

    @model_validator(mode="wrap")
    @classmethod
    def _with_its_workload_fields(
        cls, data: Any, handler: ModelWrapValidatorHandler[JobSpec]
    ) -> JobSpec:
        """Validate the common fields here and the rest with the chosen workload's model,
        reporting every problem of both at once, each under its own field's name."""
        if not isinstance(data, dict):
            return handler(data)
        common = {key: value for key, value in data.items() if key in cls.model_fields}
        rest = {key: value for key, value in data.items() if key not in cls.model_fields}
        problems: list[Any] = []
        spec: JobSpec | None = None
        try:
            spec = handler(common)
        except ValidationError as err:
            problems += err.errors()
        name = spec.workload if spec is not None else common.get("workload", "simulate")
        if name not in workload.names():
            if problems:  # the workload field failed: its error says why
                raise ValidationError.from_exception_data(cls.__name__, problems)
            name = "simulate"  # what default a spec without a workload gets
        kind = workload.named(name)
        if spec is not None and spec.max_cost_usd is not None and not kind.reports_usage:
            message = f"applies to workloads that call a model: a {name} job spends nothing"
            problems.append(_field_error("max_cost_usd", spec.max_cost_usd, message))
        fields = kind.Fields
        given: dict[str, Any] = {}
        for key, value in rest.items():
            owner = None if key in fields.model_fields else workload.owner_of(key)
            if owner is None:
                given[key] = value  # its own, or nobody's (the model refuses that, naming it)
            elif value not in (None, [], {}):  # another workload's field, left empty: ignored
                problems.append(_foreign(key, value, owner))
        sizes = (
            {} if spec is None else {"total_items": spec.total_items, "chunk_size": spec.chunk_size}
        )
        try:
            own = fields.model_validate(given, context=sizes)
        except ValidationError as err:
            problems += err.errors()
        if problems or spec is None:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        object.__setattr__(spec, "__pydantic_extra__", own.model_dump())
        spec.__pydantic_fields_set__.update(given)
        spec.__pydantic_private__ = {"_own": own}
        return spec

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The common fields, and each registered workload's own as one of the alternatives
        `workload` chooses between (an OpenAPI discriminator): what /docs and the
        dashboard's start form show."""
        schema = handler(core_schema)
        spec = handler.resolve_ref_schema(schema)
        # The generator itself, not `handler`: it files each model under its own definition
        # (`handler` would inline it), which the discriminator's mapping refers to.
        generator: GenerateJsonSchema = handler.generate_json_schema  # type: ignore[attr-defined]
        names = workload.names()
        alternatives, mapping = [], {}
        for name in names:
            ref = generator.generate_inner(workload.named(name).Fields.__pydantic_core_schema__)
            fields = handler.resolve_ref_schema(ref)
            fields["properties"] = {"workload": {"const": name}, **fields.get("properties", {})}
            alternatives.append(ref)
            mapping[name] = ref["$ref"]
        spec.pop("additionalProperties", None)  # what may come beside: the alternatives say
        spec["properties"]["workload"]["enum"] = names
        spec["oneOf"] = alternatives
        spec["discriminator"] = {"propertyName": "workload", "mapping": mapping}
        return schema

    @property
    def own(self) -> WorkloadFields:
        """The workload's own fields, validated by its model (`Fields.of(spec)` types them)."""
        return self._own

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        # A change of the common fields is a copy, as pydantic makes it (the store's create_job
        # sets the job_id of every submitted job this way); one of the workload's fields is
        # validated as a new body would be, so `own` never disagrees with the body.
        if not update or update.keys() <= type(self).model_fields.keys():
            return super().model_copy(update=update, deep=deep)
        return self.model_validate({**self.model_dump(exclude_unset=True), **update})

    @property
    def total_chunks(self) -> int:
        return chunk_count(self.total_items, self.chunk_size)


def _foreign(field: str, value: Any, owner: str) -> InitErrorDetails:
    message = f"{field} applies to the {owner} workload only (only the {owner} workload reads it)"
    return _field_error(field, value, message)


def _field_error(field: str, value: Any, message: str) -> InitErrorDetails:
    return InitErrorDetails(
        type="value_error", loc=(field,), input=value, ctx={"error": ValueError(message)}
    )


def chunk_indexes_in_range(indexes: Iterable[int], info: ValidationInfo) -> None:
    """For a workload's fields that name chunks: each index within the job's chunks (known
    from the validation context the JobSpec gives, when its sizes are valid)."""
    context = info.context or {}
    total, size = context.get("total_items"), context.get("chunk_size")
    if total is None or size is None:
        return  # the size fields failed; their errors say why
    chunks = chunk_count(total, size)
    bad = sorted(i for i in indexes if i >= chunks)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if bad[10:] else "")
        raise ValueError(f"chunk indexes {shown} are out of range: this job has {chunks} chunks")
