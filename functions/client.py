"""The one Inngest client of the app, configured from settings."""

from __future__ import annotations

import logging

import inngest

from chunking.settings import Settings, get_settings


def make_client(settings: Settings) -> inngest.Inngest:
    dev_url = settings.inngest_dev_url
    return inngest.Inngest(
        app_id=settings.inngest_app_id,
        is_production=not settings.inngest_dev_mode,
        api_base_url=dev_url,
        event_api_base_url=dev_url,
        signing_key=settings.inngest_signing_key,
        event_key=settings.inngest_event_key,
        logger=logging.getLogger("uvicorn"),
    )


inngest_client = make_client(get_settings())
