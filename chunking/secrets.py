"""The two secrets: the model endpoint's API key and the key that signs completion callbacks.

Locally they are plain settings (OPENAI_API_KEY, CALLBACK_SECRET). In the cloud they live in
SSM Parameter Store SecureStrings, and the functions' environment holds only their names
(OPENAI_API_KEY_PARAMETER, CALLBACK_SECRET_PARAMETER): environment variables are readable by
anyone who may read a function's configuration. Reads go through Powertools' Parameters
utility, decrypted and cached for MAX_AGE_S, so a warm function asks SSM once per secret per
few minutes and a rotated value is picked up without a deploy.

Only the worker may read them. The starter asks only whether they are configured
(`model_key_configured`, `callbacks_configured`), which reads nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from chunking.errors import PermanentError, TransientError
from chunking.settings import get_settings


class SecretNotReadableError(PermanentError):
    """The parameter is missing, or this function may not read or decrypt it."""


class SecretReadFailedError(TransientError):
    """SSM did not answer this time (throttled, unreachable): another attempt may succeed."""


def model_key_configured() -> bool:
    """Whether a model API key is configured: plain or as a parameter name. Reads nothing."""
    settings = get_settings()
    return bool(settings.openai_api_key or settings.openai_api_key_parameter)


def callbacks_configured() -> bool:
    """Whether the callback signing key is configured: plain or as a parameter name."""
    settings = get_settings()
    return bool(settings.callback_secret or settings.callback_secret_parameter)


def openai_api_key() -> str | None:
    """The model's API key: the plain setting, else its SSM parameter's value, else None."""
    settings = get_settings()
    return _secret(
        settings.openai_api_key, settings.openai_api_key_parameter, "OPENAI_API_KEY_PARAMETER"
    )


def callback_secret() -> str | None:
    """The callback signing key: the plain setting, else its SSM parameter's value, else None."""
    settings = get_settings()
    return _secret(
        settings.callback_secret, settings.callback_secret_parameter, "CALLBACK_SECRET_PARAMETER"
    )


def _secret(plain: str | None, parameter: str | None, setting: str) -> str | None:
    if plain:
        return plain
    return read_parameter(parameter, setting) if parameter else None


ParameterReader = Callable[[str, str], str]
_reader: ParameterReader | None = None


def use_parameter_reader(reader: ParameterReader) -> None:
    """Where `*_PARAMETER` names are read: the cloud path plugs in SSM (cloud.parameters)."""
    global _reader
    _reader = reader


def read_parameter(name: str, setting: str) -> str:
    """The named parameter's value, through the reader the process was given."""
    if _reader is None:
        raise SecretNotReadableError(
            f"{setting} names {name!r}, but this process reads no parameters (only the cloud "
            "path does): set the secret itself instead"
        )
    return _reader(name, setting)
