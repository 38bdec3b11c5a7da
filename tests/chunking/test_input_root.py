"""Where local llm inputs may be, and how big (issue 25): a dedicated folder by default, no
dotfiles, one answer for whatever cannot be read, and a size bound the README's scale fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from chunking.api_errors import field_errors
from chunking.prepare import prepare_spec
from chunking.settings import Settings, get_settings
from chunking.spec import JobSpec
from workloads.llm.input import check_input

LINE = json.dumps({"id": 1, "prompt": "a secret, were it read"}) + "\n"


@pytest.fixture(autouse=True)
def a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # an llm job needs a model to call
    get_settings.cache_clear()


def input_error(uri: str) -> str:
    with pytest.raises(ValidationError) as info:
        prepare_spec(JobSpec(workload="llm", input_uri=uri), "local")
    return {e["field"]: e["message"] for e in field_errors(info.value)}["input_uri"]


def test_the_default_root_is_a_folder_of_its_own_created_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workloads.llm.input import ensure_input_root

    monkeypatch.delenv("LLM_INPUT_ROOT")
    assert Settings().llm_input_root == Path("data/inputs")  # not the app's folder (.env, db)
    monkeypatch.setenv("LLM_INPUT_ROOT", str(tmp_path / "new" / "inputs"))
    get_settings.cache_clear()
    ensure_input_root()
    assert (tmp_path / "new" / "inputs").is_dir()


def test_missing_outside_and_dotfiles_are_refused_alike(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A caller learns nothing about which paths exist, or how big they are: a valid JSONL
    dotfile, one in a dot-folder, one outside the root (directly or by a symlink) and a missing
    one get the same words."""
    (tmp_path / ".env.jsonl").write_text(LINE)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "in.jsonl").write_text(LINE)
    outside = tmp_path_factory.mktemp("outside") / "in.jsonl"
    outside.write_text(LINE)
    (tmp_path / "link.jsonl").symlink_to(outside)
    (tmp_path / "dir").mkdir()
    uris = [
        str(tmp_path / ".env.jsonl"),
        str(tmp_path / ".hidden" / "in.jsonl"),
        str(tmp_path / "dir" / ".." / ".env.jsonl"),
        str(outside),
        str(tmp_path / "link.jsonl"),
        str(tmp_path / "missing.jsonl"),
        "/etc/passwd",
    ]
    messages = {input_error(uri).replace(repr(uri), "URI") for uri in uris}
    assert len(messages) == 1, messages
    [message] = messages
    assert "not found or not allowed" in message
    assert str(tmp_path) not in message and "bytes" not in message

    (tmp_path / "good.jsonl").write_text(LINE)
    assert check_input(str(tmp_path / "good.jsonl"), None) == 1  # a plain name still reads


def sparse(path: Path, size: int) -> str:
    with path.open("wb") as f:
        f.truncate(size)  # takes no room; the submission only stats it
    return str(path)


def test_an_input_far_over_the_old_64_mib_is_taken_and_one_over_the_bound_is_not(
    tmp_path: Path,
) -> None:
    big = sparse(tmp_path / "big.jsonl", 171 * 10**6)  # the README's 1,000,000-line input
    assert check_input(big, None) is None  # accepted: its lines are read by the job's plan
    bound = get_settings().llm_input_max_bytes
    assert bound >= 2 * 2**30
    message = input_error(sparse(tmp_path / "huge.jsonl", bound + 1))
    assert f"over the limit of {bound} bytes" in message and "LLM_INPUT_MAX_BYTES" in message
