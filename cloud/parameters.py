"""SSM Parameter Store SecureStrings read through Powertools' Parameters utility: the cloud
path's reader for chunking.secrets (decrypted, cached MAX_AGE_S, errors mapped to the core's
taxonomy: a missing or forbidden parameter is permanent, a throttled or failed read is not)."""

from __future__ import annotations

from aws_lambda_powertools.utilities.parameters import GetParameterError, get_parameter

from chunking.secrets import SecretNotReadableError, SecretReadFailedError

MAX_AGE_S = 300
# SSM answers that another attempt cannot change: the deployment needs fixing (then redrive).
NOT_READABLE_CODES = frozenset(
    {
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "AccessDeniedException",
        "ValidationException",
        "InvalidKeyId",
        "KMSAccessDeniedException",
    }
)


def read_parameter(name: str, setting: str) -> str:
    """A SecureString's decrypted value, cached MAX_AGE_S. Errors name it, never hold a value."""
    try:
        value: str = get_parameter(name, decrypt=True, max_age=MAX_AGE_S)
        return value
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
