"""The local settings (.env) as the emulated stack's deploy gets them: parameters and SSM.

The model and callback parameters take the local values, so both paths ask the same model and
sign callbacks alike. The secrets go into moto's SSM as SecureStrings, and the template gets
their names, never their values: the emulated functions read them at run time, as deployed.
"""

from __future__ import annotations

import json
from typing import Any

# Where the emulator keeps the local secrets in moto's SSM, as the README's deploy steps do.
LOCAL_SECRET_PARAMETERS = {
    "OpenAiApiKeyParameter": "/long-jobs/openai-api-key",
    "CallbackSecretParameter": "/long-jobs/callback-secret",
}
# Blank, and so unset for the settings: neither this process's environment nor .env may hand a
# function a plaintext secret that the deployed functions would not have.
NO_PLAIN_SECRETS = {"OPENAI_API_KEY": "", "CALLBACK_SECRET": ""}


def local_secrets() -> dict[str, str]:
    """The local settings' secrets, by the template parameter that names their SSM parameter."""
    from chunking.settings import get_settings

    settings = get_settings()
    values = {
        "OpenAiApiKeyParameter": settings.openai_api_key,
        "CallbackSecretParameter": settings.callback_secret,
    }
    return {parameter: value for parameter, value in values.items() if value}


def local_parameters() -> dict[str, Any]:
    """The template's model, batch-mode and callback parameters as the local settings (.env)
    have them."""
    from chunking.settings import get_settings

    settings = get_settings()
    return {
        "OpenAiBaseUrl": settings.openai_base_url or "",
        "OpenAiModel": settings.openai_model,
        "LlmPricePromptPerMtok": settings.llm_price_prompt_per_mtok,
        "LlmPriceCompletionPerMtok": settings.llm_price_completion_per_mtok,
        "AllowPrivateCallbacks": str(settings.allow_private_callbacks).lower(),
        # Batch mode's polls and price as the local path has them: the two paths compare alike.
        "LlmBatchPollMinS": settings.llm_batch_poll_min_s,
        "LlmBatchPollMaxS": settings.llm_batch_poll_max_s,
        "LlmBatchDiscounts": (
            json.dumps(settings.llm_batch_discounts) if settings.llm_batch_discounts else ""
        ),
        # A tenant's default spend cap, as the local path has it.
        "MaxCostUsdByTenant": (
            json.dumps(settings.max_cost_usd_by_tenant) if settings.max_cost_usd_by_tenant else ""
        ),
        **{parameter: LOCAL_SECRET_PARAMETERS[parameter] for parameter in local_secrets()},
    }


def put_local_secrets(ssm: Any, parameters: dict[str, Any]) -> None:
    """Store the local secrets as SecureStrings under the names the template parameters give."""
    for parameter, value in local_secrets().items():
        if name := parameters.get(parameter):
            ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
