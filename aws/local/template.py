"""aws/template.yaml as CloudFormation receives it, for the offline emulator.

SAM's own translator (samtranslator: what `sam validate`, `sam build` and CloudFormation's
AWS::Serverless transform run) turns the SAM template into plain CloudFormation offline:
Globals merged into each function, each function's events made into event source mappings and
API paths. `StackTemplate` reads what the emulator plays from that translation, with the
parameter values and conditions of one deploy resolved by aws/local/intrinsics.py: the
functions (code, handler, Timeout, environment), the SQS event source mappings (BatchSize,
batching window, MaximumConcurrency, ReportBatchItemFailures) and the API's routes.

Why our own resolver rather than moto's CloudFormation (`create_stack` of the translation does
create the queues with their redrive policy, the table with its index and the bucket): the
functions' environment, the event source mappings and the API's integrations need resolving
anyway, and moto runs none of them for us. moto would only take the template trimmed to the
queues, table and bucket, with names injected to keep the fixed ones tools/ and the README
use, at about 2 s a stack, which every test that makes one would pay. One small resolver does
both: aws/local/resources.py creates each resource from its resolved properties.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from samtranslator.parser.parser import Parser  # type: ignore[import-untyped]
from samtranslator.translator.translator import Translator  # type: ignore[import-untyped]
from samtranslator.yaml_helper import intrinsics_multi_constructor  # type: ignore[import-untyped]

from aws.local.intrinsics import ACCOUNT_ID, REGION, Intrinsics, Resources
from aws.local.sqs_event_source import EventSourceConfig

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
REPO = TEMPLATE.parents[1]
FUNCTION = "AWS::Lambda::Function"
PLAYED_HERE = (FUNCTION, "AWS::ApiGateway::RestApi")  # by the emulator itself, not moto
ANY_METHOD = "x-amazon-apigateway-any-method"
LAMBDA_DEFAULT_TIMEOUT_S = 3
CODE_BUCKET = "local-code"  # stands in for the bucket `sam package` uploads the code to


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...), as samtranslator reads them."""


# On a loader of our own: samtranslator's yaml_parse registers it on yaml.SafeLoader itself,
# for every caller in the process.
_TemplateLoader.add_multi_constructor("!", intrinsics_multi_constructor)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The SAM template as written, short tags in their long form ({"Ref": ...})."""
    with path.open() as f:
        template: dict[str, Any] = yaml.load(f, Loader=_TemplateLoader)
    return template


def translate(sam: dict[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudFormation template a deploy hands CloudFormation, made as `sam validate` does.

    The policy templates (DynamoDBCrudPolicy, ...) ship with the translator; only managed
    policies named by their short name would need AWS, and the template names none.
    """
    translator = Translator(
        managed_policy_map=None,
        sam_parser=Parser(),
        plugins=[],
        boto_session=boto3.session.Session(region_name=REGION),
    )
    cfn: dict[str, Any] = translator.translate(
        _with_code_in_s3(sam), dict(parameters), get_managed_policy_map=dict
    )
    translator.metrics.publish()  # to SAM's offline no-op publisher: else it warns at exit
    return cfn


def _with_code_in_s3(sam: dict[str, Any]) -> dict[str, Any]:
    """A copy with the local code folders as S3 URIs, as `sam package` leaves them (the
    translator takes no local path). The key is the folder: the emulator finds the code again."""
    packaged = copy.deepcopy(sam)
    for resource in packaged["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://{CODE_BUCKET}/{props[key]}"
    return packaged


@functools.lru_cache(maxsize=16)
def _translated(overrides: tuple[tuple[str, Any], ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(SAM template, its translation), once per set of parameter values: every test's stack
    and every emulated function reads them, and nothing writes to them."""
    sam = load_template()
    return sam, translate(sam, dict(overrides))


@dataclass(frozen=True)
class FunctionConfig:
    logical_id: str
    code_dir: Path
    handler: str  # "module.function", as Lambda reads it
    timeout_s: float
    environment: dict[str, str]


@dataclass(frozen=True)
class EventSourceMapping:
    logical_id: str
    function: str  # the logical id of the function it invokes
    queue_arn: str
    config: EventSourceConfig


@dataclass(frozen=True)
class Route:
    stage: str
    method: str  # "POST", ...
    path: str  # API Gateway's resource path: "/jobs/{job_id}"
    function: str  # the logical id of the function it integrates (Lambda proxy)
    api_key_required: bool


class StackTemplate:
    """The translated template and the parameter values of one deploy."""

    def __init__(self, parameters: Mapping[str, Any] | None = None) -> None:
        """`parameters` override the template's defaults, as `sam deploy --parameter-overrides`."""
        self.sam, self.cfn = _translated(tuple(sorted((parameters or {}).items())))
        defaults = {
            name: p["Default"] for name, p in self.cfn["Parameters"].items() if "Default" in p
        }
        self.parameters: dict[str, Any] = {**defaults, **(parameters or {})}
        self.types = {logical_id: r["Type"] for logical_id, r in self.cfn["Resources"].items()}

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """The resources of a type that this deploy creates (their Condition, if any, holds)."""
        conditions = self.resolver(_NoResources())
        return {
            logical_id: resource
            for logical_id, resource in self.cfn["Resources"].items()
            if resource["Type"] == resource_type
            and ("Condition" not in resource or conditions.condition(resource["Condition"]))
        }

    def resolver(self, stack: Resources) -> Intrinsics:
        """Intrinsics resolved against `stack` and the functions and APIs the emulator runs."""
        conditions = self.cfn.get("Conditions", {})
        return Intrinsics(self.parameters, conditions, _PlayedHere(self.types, stack))

    def function(self, logical_id: str, stack: Resources) -> FunctionConfig:
        """A function's code, handler, Timeout and environment (Globals merged by SAM)."""
        props = self.resources(FUNCTION)[logical_id]["Properties"]
        resolver = self.resolver(stack)
        variables = resolver.resolve(props.get("Environment", {}).get("Variables", {}))
        return FunctionConfig(
            logical_id=logical_id,
            code_dir=TEMPLATE.parent / props["Code"]["S3Key"],
            handler=props["Handler"],
            timeout_s=float(resolver.resolve(props.get("Timeout", LAMBDA_DEFAULT_TIMEOUT_S))),
            environment={name: str(value) for name, value in variables.items()},
        )

    def event_sources(self, stack: Resources) -> list[EventSourceMapping]:
        """The SQS event source mappings, in the order the SAM template lists the events."""
        resolver = self.resolver(stack)
        found = []
        for logical_id, resource in self.resources("AWS::Lambda::EventSourceMapping").items():
            props = resolver.resolve(resource["Properties"])
            queue_arn, function = props["EventSourceArn"], props["FunctionName"]
            if queue_arn.startswith("arn:aws:sqs:"):  # only SQS is emulated
                found.append(EventSourceMapping(logical_id, function, queue_arn, _config(props)))
        # SAM names an event's mapping <function><event>; the translation's order is not stable.
        events = [
            f"{function}{event}"
            for function, resource in self.sam["Resources"].items()
            for event in resource.get("Properties", {}).get("Events", {})
        ]
        order = {logical_id: position for position, logical_id in enumerate(events)}
        return sorted(found, key=lambda mapping: order.get(mapping.logical_id, len(order)))

    def routes(self) -> list[Route]:
        """Every REST API stage's routes: method and path, to the function each integrates."""
        resolver = self.resolver(_NoResources())
        found = []
        for stage in self.resources("AWS::ApiGateway::Stage").values():
            props = stage["Properties"]
            api = self.cfn["Resources"][resolver.resolve(props["RestApiId"])]
            found += _routes(
                resolver.resolve(props["StageName"]), api["Properties"]["Body"], resolver
            )
        return sorted(found, key=lambda route: (route.stage, route.path, route.method))


def _config(mapping: dict[str, Any]) -> EventSourceConfig:
    """An event source mapping's settings from its resolved properties (else Lambda's)."""
    default = EventSourceConfig()
    scaling = mapping.get("ScalingConfig", {})
    return EventSourceConfig(
        batch_size=int(mapping.get("BatchSize", default.batch_size)),
        batching_window_s=float(mapping.get("MaximumBatchingWindowInSeconds", 0)),
        max_concurrency=int(scaling.get("MaximumConcurrency", default.max_concurrency)),
        report_batch_item_failures=(
            "ReportBatchItemFailures" in mapping.get("FunctionResponseTypes", [])
        ),
    )


def _routes(stage: str, body: dict[str, Any], resolver: Intrinsics) -> list[Route]:
    """The Lambda proxy routes of a REST API's OpenAPI body (what SAM makes of Api events)."""
    definitions = body.get("securityDefinitions", {})
    key_schemes = {name for name, scheme in definitions.items() if scheme.get("type") == "apiKey"}
    found = []
    for path, operations in body["paths"].items():
        for method, operation in operations.items():
            integration = operation.get("x-amazon-apigateway-integration", {})
            if integration.get("type") != "aws_proxy":
                continue  # only Lambda proxy integrations are emulated
            uri = resolver.resolve(integration["uri"])  # ...:function:<name>/invocations
            function = re.search(r":function:([^/:]+)", uri)
            assert function, f"{method} {path} integrates no function: {uri}"
            requirements = operation.get("security", [])
            found.append(
                Route(
                    stage=stage,
                    path=path,
                    function=function[1],
                    method="ANY" if method == ANY_METHOD else method.upper(),
                    api_key_required=any(set(r) & key_schemes for r in requirements),
                )
            )
    return found


class _PlayedHere:
    """What the emulator runs itself answers Ref with its logical id (its name here), and a
    function's Arn names it so; the rest is the stack's."""

    def __init__(self, types: dict[str, str], stack: Resources) -> None:
        self.types, self.stack = types, stack  # logical id -> resource type

    def ref(self, logical_id: str) -> str:
        if self.types.get(logical_id) in PLAYED_HERE:
            return logical_id
        return self.stack.ref(logical_id)

    def get_att(self, logical_id: str, attribute: str) -> str:
        if self.types.get(logical_id) == FUNCTION and attribute == "Arn":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{logical_id}"
        return self.stack.get_att(logical_id, attribute)


class _NoResources:
    """For what refers to no stack resource: conditions, the API's routes."""

    def ref(self, logical_id: str) -> str:
        raise ValueError(f"{logical_id} is not known here")

    def get_att(self, logical_id: str, attribute: str) -> str:
        raise ValueError(f"{logical_id}.{attribute} is not known here")
