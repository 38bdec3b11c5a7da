"""The model key and the callback secret on the cloud path: SSM SecureStrings, never plain
environment variables; read at run time by the worker alone; API Gateway access logs on.

Checked on the template, on its SAM translation (the IAM roles really deployed), on
chunking.secrets against moto's SSM, and through the offline emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

import cloud.parameters  # importing cloud plugs the SSM reader in, as every handler does
from aws.local.emulator import emulated_function
from aws.local.local_secrets import LOCAL_SECRET_PARAMETERS, local_parameters, put_local_secrets
from aws.local.resources import NAMES, LocalStack
from aws.local.template import TEMPLATE, StackTemplate, load_template
from chunking import secrets
from chunking.errors import PermanentError, TransientError
from chunking.settings import get_settings
from tests.aws.test_emulator import Running, running_emulator
from tests.aws.test_template import resource, unconditional
from tests.callback_receiver import CallbackReceiver
from tests.llm_server import FakeModelServer
from tests.support import ServerThread, set_settings, wait_for

FUNCTIONS = ("StarterFunction", "StatusFunction", "WorkerFunction")
SECRET_PARAMETERS = {"OpenAiApiKeyParameter": "OPENAI_API_KEY_PARAMETER",
                     "CallbackSecretParameter": "CALLBACK_SECRET_PARAMETER"}  # fmt: skip
MODEL_KEY = "sk-test-model-key-0123456789"
SIGNING_KEY = "test-signing-key-9876543210"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def environment(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's variables as the template writes them (Globals merged)."""
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(resource(template, logical_id).get("Environment", {}).get("Variables", {}))
    return variables


def names_used(value: Any) -> set[str]:
    """Every name a value refers to: Refs, and ${Name} in Subs."""
    if isinstance(value, dict):
        found = {value["Ref"]} if "Ref" in value else set()
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            found |= set(re.findall(r"\$\{([\w:.]+)\}", sub if isinstance(sub, str) else sub[0]))
        return found.union(*(names_used(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(names_used(v) for v in value))
    return set()


# (a) No function's environment holds a secret.


def test_no_function_environment_holds_a_secret_or_a_noecho_parameter(
    template: dict[str, Any],
) -> None:
    parameters = template["Parameters"]
    assert {"OpenAiApiKey", "CallbackSecret"}.isdisjoint(parameters)
    secret_parameters = {name for name, p in parameters.items() if p.get("NoEcho")}
    for logical_id in FUNCTIONS:
        env = environment(template, logical_id)
        assert {"OPENAI_API_KEY", "CALLBACK_SECRET"}.isdisjoint(env), logical_id
        for name, value in env.items():
            assert not names_used(value) & secret_parameters, f"{logical_id} {name}"


def test_functions_that_must_know_the_secrets_get_their_names_and_the_status_nothing(
    template: dict[str, Any],
) -> None:
    for parameter, variable in SECRET_PARAMETERS.items():
        assert template["Parameters"][parameter]["Default"] == ""  # empty: not configured
        assert not re.fullmatch(template["Parameters"][parameter]["AllowedPattern"], "no-slash")
        assert re.fullmatch(template["Parameters"][parameter]["AllowedPattern"], "/a/b-c_d.e")
        for logical_id in ("StarterFunction", "WorkerFunction"):
            assert environment(template, logical_id)[variable] == {"Ref": parameter}
        assert variable not in environment(template, "StatusFunction")


# (b) Only the worker may read them.


def ssm_reads(template: dict[str, Any], logical_id: str) -> dict[str, str | None]:
    """The SSM parameters a function's policies let it read: parameter -> grant's condition."""
    reads: dict[str, str | None] = {}
    for policy in resource(template, logical_id)["Policies"]:
        condition = policy["Fn::If"][0] if "Fn::If" in policy else None
        [(name, scope)] = unconditional(policy).items()
        if name.startswith("SSMParameter"):
            reads[scope["ParameterName"]["Ref"]] = condition
        assert not name.startswith(("KMS", "AWSSecretsManager", "SecretsManager")), logical_id
    return reads


def test_only_the_worker_is_granted_each_secret_and_only_when_it_is_configured(
    template: dict[str, Any],
) -> None:
    worker = ssm_reads(template, "WorkerFunction")
    assert worker == {
        "OpenAiApiKeyParameter": "HasOpenAiApiKeyParameter",
        "CallbackSecretParameter": "HasCallbackSecretParameter",
    }
    for parameter, condition in worker.items():
        assert template["Conditions"][condition] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]
        }
    # The names keep their leading slash: the policy template that expects one.
    grants = [unconditional(p) for p in resource(template, "WorkerFunction")["Policies"]]
    assert sum("SSMParameterWithSlashPrefixReadPolicy" in p for p in grants) == 2
    assert ssm_reads(template, "StarterFunction") == {}
    assert ssm_reads(template, "StatusFunction") == {}


TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

template = yaml_parse(open(sys.argv[1]).read())
for res in template["Resources"].values():  # local folders are uploaded by sam; not here
    for key in ("CodeUri", "ContentUri"):
        if key in res.get("Properties", {}):
            res["Properties"][key] = "s3://bucket/key"
class NoManagedPolicies:
    def load(self): return {}
out = transform(template, {}, NoManagedPolicies())
print(json.dumps({k: v for k, v in out["Resources"].items() if k.endswith("FunctionRole")}))
"""


def test_the_translated_roles_grant_ssm_reads_to_the_worker_alone() -> None:
    """SAM's own translator (as `sam deploy` runs it) on the Fn::If'd policy templates."""
    python = Path(__file__).resolve().parents[2] / ".venv-sam/bin/python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make test`, which installs requirements-sam.txt")
    result = subprocess.run(
        [str(python), "-c", TRANSLATE, str(TEMPLATE)], capture_output=True, text=True,
        timeout=300, env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    roles = json.loads(result.stdout)
    for logical_id in ("StarterFunctionRole", "StatusFunctionRole"):
        text = json.dumps(roles[logical_id])
        assert "ssm:" not in text and "kms:" not in text and "secretsmanager:" not in text
    conditional = {
        entry["Fn::If"][0]: entry["Fn::If"][1]["PolicyDocument"]["Statement"]
        for entry in roles["WorkerFunctionRole"]["Properties"]["Policies"]
        if "Fn::If" in entry
    }
    assert set(conditional) == {"HasOpenAiApiKeyParameter", "HasCallbackSecretParameter"}
    for condition, statements in conditional.items():
        [read] = [s for s in statements if "ssm:GetParameter" in s["Action"]]
        arn, values = read["Resource"]["Fn::Sub"]
        assert arn.endswith(":parameter${parameterName}")  # the name brings its own slash
        assert values["parameterName"] == {"Ref": condition.removeprefix("Has")}


# (c) Access logging.


def test_api_access_logging_is_on_with_its_log_group_and_never_logs_the_key(
    template: dict[str, Any],
) -> None:
    setting = resource(template, "JobsApi")["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    group = template["Resources"]["ApiAccessLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup" and group["Properties"]["RetentionInDays"] > 0
    line = json.loads(re.sub(r"\$context\.([\w.]+)", r"\1", setting["Format"]))
    assert {"requestId", "ip", "requestTime", "httpMethod", "resourcePath", "status",
            "responseLength", "apiKeyId"} <= set(line)  # fmt: skip
    assert line["apiKeyId"] == "identity.apiKeyId"
    assert not re.search(r"\$context\.identity\.apiKey(?!Id)", setting["Format"])


def test_the_account_cloudwatch_role_is_set_when_asked_and_the_stage_waits_for_it(
    template: dict[str, Any],
) -> None:
    gate = template["Parameters"]["ApiGatewayCloudWatchRole"]
    assert gate["Default"] == "true"
    assert "account" in gate["Description"] and "region" in gate["Description"]
    assert template["Conditions"]["SetsApiGatewayAccount"] == {
        "Fn::Equals": [{"Ref": "ApiGatewayCloudWatchRole"}, "true"]
    }
    account = template["Resources"]["ApiGatewayAccount"]
    assert account["Condition"] == "SetsApiGatewayAccount"
    assert account["Properties"]["CloudWatchRoleArn"] == {
        "Fn::GetAtt": ["ApiGatewayCloudWatchLogsRole", "Arn"]
    }
    role = template["Resources"]["ApiGatewayCloudWatchLogsRole"]
    assert role["Condition"] == "SetsApiGatewayAccount" and role["DeletionPolicy"] == "Retain"
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in str(role["Properties"]["ManagedPolicyArns"])
    # The stage fails to create before the account setting exists: a conditional dependency.
    assert template["Resources"]["JobsApi"]["DependsOn"] == "ApiGatewayAccountReady"
    ready = template["Resources"]["ApiGatewayAccountReady"]["Metadata"]
    assert names_used(ready) == {"ApiGatewayAccount"}


# (d) chunking.secrets against moto's SSM.


@pytest.fixture
def ssm(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Counter[str]]]:
    """moto's SSM, Powertools' caches empty, and a count of the SSM calls this process makes."""
    from aws_lambda_powertools.utilities import parameters
    from botocore.client import BaseClient

    calls: Counter[str] = Counter()
    real_call = getattr(BaseClient, "_make_api_call")  # noqa: B009 - private, typed away

    def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "ssm":
            calls[operation] += 1
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counted)
    for name in ("OPENAI_API_KEY", "CALLBACK_SECRET", "OPENAI_API_KEY_PARAMETER",
                 "CALLBACK_SECRET_PARAMETER"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    with mock_aws():
        yield boto3.client("ssm"), calls
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    get_settings.cache_clear()


def test_reads_the_decrypted_securestring_once_then_from_the_cache(
    ssm: tuple[Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, calls = ssm
    client.put_parameter(Name="/t/model", Value=MODEL_KEY, Type="SecureString")
    client.put_parameter(Name="/t/callback", Value=SIGNING_KEY, Type="SecureString")
    set_settings(monkeypatch, OPENAI_API_KEY_PARAMETER="/t/model",
              CALLBACK_SECRET_PARAMETER="/t/callback")  # fmt: skip
    assert secrets.openai_api_key() == MODEL_KEY
    assert secrets.openai_api_key() == MODEL_KEY
    assert calls["GetParameter"] == 1  # the second read made no SSM call
    assert secrets.callback_secret() == SIGNING_KEY
    assert secrets.callback_secret() == SIGNING_KEY
    assert calls["GetParameter"] == 2
    assert (
        60 <= cloud.parameters.MAX_AGE_S <= 900
    )  # a few minutes: rotation shows up without a deploy


def test_a_rotated_value_is_read_once_the_cache_has_expired(
    ssm: tuple[Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, calls = ssm
    client.put_parameter(Name="/t/callback", Value="old-value", Type="SecureString")
    set_settings(monkeypatch, CALLBACK_SECRET_PARAMETER="/t/callback")
    monkeypatch.setattr(cloud.parameters, "MAX_AGE_S", 0)
    assert secrets.callback_secret() == "old-value"
    client.put_parameter(Name="/t/callback", Value="new-value", Type="SecureString", Overwrite=True)
    assert secrets.callback_secret() == "new-value"
    assert calls["GetParameter"] == 2


def test_the_plain_setting_wins_and_reads_nothing(
    ssm: tuple[Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, calls = ssm
    set_settings(monkeypatch, OPENAI_API_KEY="plain-key", OPENAI_API_KEY_PARAMETER="/t/model",
              CALLBACK_SECRET="plain-secret", CALLBACK_SECRET_PARAMETER="/t/callback")  # fmt: skip
    assert (secrets.openai_api_key(), secrets.callback_secret()) == ("plain-key", "plain-secret")
    assert calls["GetParameter"] == 0


def test_nothing_configured_is_none_and_configuredness_never_reads(
    ssm: tuple[Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workloads.llm.client import missing_model_endpoint

    _, calls = ssm
    get_settings.cache_clear()
    assert (secrets.openai_api_key(), secrets.callback_secret()) == (None, None)
    assert not secrets.model_key_configured() and not secrets.callbacks_configured()
    assert "OPENAI_API_KEY is not set" in (missing_model_endpoint() or "")
    # What the starter asks: the names alone make them configured; nothing is read.
    set_settings(monkeypatch, OPENAI_API_KEY_PARAMETER="/t/model",
              CALLBACK_SECRET_PARAMETER="/t/callback")  # fmt: skip
    assert secrets.model_key_configured() and secrets.callbacks_configured()
    assert missing_model_endpoint() is None
    assert calls["GetParameter"] == 0


def test_an_unreadable_parameter_names_itself_and_never_shows_a_value(
    ssm: tuple[Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.client import BaseClient

    client, _ = ssm
    set_settings(monkeypatch, OPENAI_API_KEY_PARAMETER="/t/missing")
    with pytest.raises(secrets.SecretNotReadableError) as missing:
        secrets.openai_api_key()
    assert isinstance(missing.value, PermanentError)  # a deployment to fix, not to retry
    assert "/t/missing" in str(missing.value) and "ParameterNotFound" in str(missing.value)

    # The parameter exists, SSM throttles: transient, and the value is nowhere in the error.
    client.put_parameter(Name="/t/callback", Value=SIGNING_KEY, Type="SecureString")
    set_settings(monkeypatch, CALLBACK_SECRET_PARAMETER="/t/callback")
    counted = getattr(BaseClient, "_make_api_call")  # noqa: B009 - private, typed away

    def throttled(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "GetParameter":
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, operation)
        return counted(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", throttled)
    with pytest.raises(secrets.SecretReadFailedError) as failed:
        secrets.callback_secret()
    assert isinstance(failed.value, TransientError)
    assert "/t/callback" in str(failed.value) and "ThrottlingException" in str(failed.value)
    assert SIGNING_KEY not in "".join(traceback.format_exception(failed.value))


def test_the_llm_client_gets_its_key_from_the_parameter(
    ssm: tuple[Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workloads.llm.client import LlmClient

    client, _ = ssm
    client.put_parameter(Name="/t/model", Value=MODEL_KEY, Type="SecureString")
    set_settings(monkeypatch, OPENAI_API_KEY_PARAMETER="/t/model")
    llm = LlmClient.from_settings(None, None)
    try:
        assert llm.client.api_key == MODEL_KEY
    finally:
        asyncio.get_event_loop().run_until_complete(llm.client.close())


# (e) Through the emulator.


def test_the_emulated_functions_get_names_and_the_secrets_go_to_ssm(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, template: dict[str, Any]
) -> None:
    set_settings(monkeypatch, OPENAI_API_KEY=MODEL_KEY, CALLBACK_SECRET=SIGNING_KEY)
    parameters = local_parameters()
    assert {p: parameters[p] for p in SECRET_PARAMETERS} == LOCAL_SECRET_PARAMETERS
    assert MODEL_KEY not in str(parameters) and SIGNING_KEY not in str(parameters)
    stack = LocalStack("jobs", "q", "dlq", 3, "bucket", "q-high")
    deploy = StackTemplate(parameters)
    for logical_id in FUNCTIONS:
        env = emulated_function(deploy, logical_id, stack, {}).environment
        assert MODEL_KEY not in str(env) and SIGNING_KEY not in str(env), logical_id
        # Blank, so neither the emulator's own environment nor .env reaches the function.
        assert env["OPENAI_API_KEY"] == env["CALLBACK_SECRET"] == ""
        names = {variable: env.get(variable) for variable in SECRET_PARAMETERS.values()}
        if logical_id == "StatusFunction":
            assert names == {"OPENAI_API_KEY_PARAMETER": None, "CALLBACK_SECRET_PARAMETER": None}
        else:
            assert names == {"OPENAI_API_KEY_PARAMETER": "/long-jobs/openai-api-key",
                             "CALLBACK_SECRET_PARAMETER": "/long-jobs/callback-secret"}  # fmt: skip
    with mock_aws():
        ssm = boto3.client("ssm")
        put_local_secrets(ssm, parameters)
        for name, value in (("/long-jobs/openai-api-key", MODEL_KEY),
                            ("/long-jobs/callback-secret", SIGNING_KEY)):  # fmt: skip
            stored = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
            assert (stored["Type"], stored["Value"]) == ("SecureString", value)


@pytest.fixture(scope="module")
def keyed_model() -> Iterator[tuple[list[str], str]]:
    """The test model server, recording the Authorization header of every call."""
    fake = FakeModelServer()
    keys: list[str] = []

    @fake.app.middleware("http")
    async def record_key(request: Any, call_next: Any) -> Any:
        keys.append(request.headers.get("authorization", ""))
        return await call_next(request)

    server = ServerThread(fake.app).start()
    yield keys, f"{server.url}/v1"
    server.stop()


@pytest.fixture(scope="module")
def emulator(keyed_model: tuple[list[str], str]) -> Iterator[tuple[Running, CallbackReceiver, str]]:
    """The emulator started with plaintext secrets in its environment, as a developer's .env."""
    hook = CallbackReceiver()
    hook_server = ServerThread(hook.app).start()
    args = ("--worker-timeout", "20", "--visibility-timeout", "30",  # > timeout: see conftest
            "--parameter", f"OpenAiBaseUrl={keyed_model[1]}")  # fmt: skip
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:  # only while the emulator starts
            for name, value in {"OPENAI_API_KEY": MODEL_KEY, "CALLBACK_SECRET": SIGNING_KEY,
                                "ALLOW_PRIVATE_CALLBACKS": "true"}.items():  # fmt: skip
                env.setenv(name, value)
            running = stack.enter_context(running_emulator(*args))
        yield running, hook, f"{hook_server.url}/hook"
    hook_server.stop()


def test_an_emulated_llm_job_calls_the_model_with_the_key_from_ssm_alone(
    emulator: tuple[Running, CallbackReceiver, str], keyed_model: tuple[list[str], str]
) -> None:
    running, _, _ = emulator
    keys, _ = keyed_model
    s3 = boto3.client("s3", endpoint_url=running.moto)
    body = "".join(json.dumps({"id": f"s{i}", "prompt": f"secret {i}"}) + "\n" for i in range(4))
    s3.put_object(Bucket=NAMES["DataBucket"], Key="inputs/secrets.jsonl", Body=body.encode())
    spec = {"workload": "llm", "input_uri": f"s3://{NAMES['DataBucket']}/inputs/secrets.jsonl",
            "chunk_size": 2}  # fmt: skip
    response = running.start(spec)
    assert response.status_code == 202, response.text
    status = running.wait_until_done(response.json()["job_id"])
    assert (status["status"], status["items_processed"]) == ("succeeded", 4)
    assert keys and set(keys) == {f"Bearer {MODEL_KEY}"}
    # The worker processes were started without the plaintext in their environment.
    state = running.state()
    pids = [*state["idle_workers"], *(p for o in state["other_sources"] for p in o["idle_workers"])]
    assert pids
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ")
        if not environ.exists():
            pytest.skip("no /proc here to read a process's environment")
        data = environ.read_bytes()
        assert MODEL_KEY.encode() not in data and SIGNING_KEY.encode() not in data


def test_an_emulated_job_signs_its_callback_with_the_secret_from_ssm(
    emulator: tuple[Running, CallbackReceiver, str],
) -> None:
    from chunking.callbacks import verify

    running, hook, url = emulator
    spec = {"total_items": 20, "chunk_size": 10, "item_delay_ms": 0, "callback_url": url}
    response = running.start(spec)
    assert response.status_code == 202, response.text
    running.wait_until_done(response.json()["job_id"])
    wait_for(lambda: len(hook.deliveries) == 1, timeout=30)
    [delivery] = hook.deliveries
    assert verify(delivery.body, delivery.headers["x-signature"], SIGNING_KEY)
    assert json.loads(delivery.body)["job_id"] == response.json()["job_id"]
