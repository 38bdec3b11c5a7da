"""The SAM toolchain on aws/template.yaml: validate --lint, cfn-lint, build, and the build run.

SAM CLI and cfn-lint live in .venv-sam (scripts/test.sh installs them): their pins conflict
with the app's dependencies. `sam build` builds for python3.11 in-process, no container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "aws/template.yaml"
TOOLS = REPO / ".venv-sam/bin"
ENV = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0",
       "SAM_CLI_DISABLE_VERSION_CHECK": "1"}  # fmt: skip


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test`, which installs requirements-sam.txt")
    return str(path)


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def test_sam_validate_lint() -> None:
    result = run(tool("sam"), "validate", "--lint", "--template", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_cfn_lint_reports_nothing() -> None:
    result = run(tool("cfn-lint"), str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("sam") / "build"
    result = run(
        tool("sam"), "build", "--template", str(TEMPLATE), "--build-dir", str(build),
        "--cache-dir", str(build.parent / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return build


def test_sam_build_produces_self_contained_artifacts(build_dir: Path) -> None:
    layer = build_dir / "CoreLayer/python"
    for package in ("chunking", "workloads", "stores", "cloud", "pydantic", "pydantic_core",
                    "pydantic_settings", "aws_lambda_powertools", "openai", "jiter"):  # fmt: skip
        assert (layer / package).is_dir(), f"{package} missing from the layer"
    # What Lambda runs, and nothing of the local path's.
    assert (layer / "stores/dynamodb.py").is_file()
    assert not (layer / "stores/sqlite.py").exists()
    # Wheels for Lambda's platform, whatever machine built them.
    [core_so] = list((layer / "pydantic_core").glob("_pydantic_core*.so"))
    assert "x86_64-linux-gnu" in core_so.name and "311" in core_so.name
    [jiter_so] = list((layer / "jiter").glob("jiter*.so"))  # openai's compiled JSON parser
    assert "x86_64-linux-gnu" in jiter_so.name and "311" in jiter_so.name
    for function in ("StarterFunction", "StatusFunction", "WorkerFunction"):
        assert (build_dir / function / "app.py").is_file()


def test_built_artifacts_run_a_job_against_moto(build_dir: Path) -> None:
    script = REPO / "tests/aws/built_artifact_check.py"
    env = {**ENV, "PYTHONPATH": str(build_dir / "CoreLayer/python"),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(script), str(build_dir), str(REPO)],
        cwd=build_dir, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["start_status"], report["status_code"]) == (202, 200)
    status = report["status"]
    assert (status["status"], status["chunks_succeeded"], status["chunks_failed"]) == (
        "partial", 9, 1,
    )  # fmt: skip
    assert status["items_processed"] == 450
    for name, origin in report["origins"].items():
        assert origin.startswith(str(build_dir.resolve())), f"{name} came from {origin}"
