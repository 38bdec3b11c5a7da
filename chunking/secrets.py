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

from chunking.errors import PermanentError, TransientError
from chunking.settings import get_settings

MAX_AGE_S = 300
# SSM answers that another attempt cannot change: the deployment needs fixing (then redrive).
NOT_READABLE_CODES = frozenset(
    {"ParameterNotFound", "ParameterVersionNotFound", "AccessDeniedException",
     "ValidationException", "InvalidKeyId", "KMSAccessDeniedException"}
)  # fmt: skip


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


def read_parameter(name: str, setting: str) -> str:
    """A SecureString's decrypted value, cached MAX_AGE_S. Errors name it, never hold a value."""
    # Lazily: the local path never needs boto3 or Powertools to get here.
    from aws_lambda_powertools.utilities.parameters import GetParameterError, get_parameter

    try:
        return get_parameter(name, decrypt=True, max_age=MAX_AGE_S)
    except GetParameterError as err:
        # Powertools wraps the SDK's error; its code says whether trying again can help.
        code = _error_code(err.__cause__ or err.__context__)
        what = f"SSM parameter {name!r} ({setting}) could not be read: {code or 'no answer'}"
        if code in NOT_READABLE_CODES:
            raise SecretNotReadableError(what) from err
        raise SecretReadFailedError(what) from err


def _error_code(error: BaseException | None) -> str | None:
    response = getattr(error, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return type(error).__name__ if error is not None else None
