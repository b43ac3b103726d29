"""Where a backend sends its requests, with which key, and what of it goes in the cache key.

An ``Endpoint`` is resolved once, explicitly: the SDKs are always given the URL and key,
so ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` in the environment are read here, become
part of every cache key, and never silently redirect a key. A provider's key from the
environment only travels over HTTPS to that provider's own host (``https://api.openai.com``,
``https://api.anthropic.com``); any other URL — another host, or the provider's host over
plain ``http://`` — gets the key passed with it (``api_key=``) or none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import UserError

__all__ = ["Endpoint"]

_OFFICIAL = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("https://api.anthropic.com", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
}
NO_KEY = "not-needed"

logger = logging.getLogger("llmrerank")


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _may_receive_env_key(url: str, official_url: str) -> bool:
    """Whether ``url`` may be sent the provider's key from the environment: only over
    HTTPS, and only to the host of ``official_url`` (the provider's own API)."""
    return urlsplit(url).scheme.lower() == "https" and _host(url) == _host(official_url)


@dataclass(frozen=True)
class Endpoint:
    """``provider`` names the service in call records and cache keys (``openai``,
    ``openai-compatible``, ``anthropic``, ``local``, ``sim``); ``identity`` is what of the
    endpoint determines a reply (its URL, or a model file when the URL changes every run);
    ``owner`` keeps a managed server (llama.cpp, a test judge) alive while in use."""

    provider: str
    base_url: str
    api_key: str = field(default=NO_KEY, repr=False)
    identity: Mapping[str, Any] = field(default_factory=dict)
    owner: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def for_api(cls, api: str, *, base_url: str | None = None, api_key: str | None = None) -> Endpoint:
        """The endpoint for ``api`` (``openai`` or ``anthropic``): ``base_url``, else the
        SDK's environment variable, else the provider's own host."""
        default_url, key_env, url_env = _OFFICIAL[api]
        url = (base_url or os.environ.get(url_env) or default_url).rstrip("/")
        official = _may_receive_env_key(url, default_url)
        if api_key is None:
            if not official and _host(url) == _host(default_url) and os.environ.get(key_env):
                logger.warning("%s is not sent to %s: an environment key goes only over https", key_env, url)
            api_key = os.environ.get(key_env) if official else NO_KEY
            if api_key is None:
                raise UserError(
                    f"{api} needs an API key: set {key_env} or pass api_key=, "
                    f"or point base_url at a compatible server"
                )
        provider = api if official or api == "anthropic" else f"{api}-compatible"
        return cls(provider=provider, base_url=url, api_key=api_key, identity={"base_url": url})
