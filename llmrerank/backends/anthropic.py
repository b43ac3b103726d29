"""Anthropic's Messages API through its SDK.

Structured output is a forced tool call by default (``structured_output="tool"``: the
reply is the tool's JSON input); ``"json_schema"`` uses the API's native
``output_config`` format; ``"prompt"`` asks for JSON in words, for servers that speak the
Messages wire format but ignore schemas (llama.cpp's ``/v1/messages``).
The installed SDK's ``messages.create`` has no ``temperature`` argument, so it travels in
``extra_body``.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UserError
from ..types import Usage
from ._clients import SDKBackend
from ._errors import check_reply, sdk_errors
from .base import BackendReply, BackendRequest
from .endpoint import Endpoint

__all__ = ["AnthropicBackend"]

_MODES = ("tool", "json_schema", "prompt")


class AnthropicBackend(SDKBackend):
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        endpoint: Endpoint | None = None,
        timeout_s: float = 60.0,
        structured_output: str = "tool",
    ) -> None:
        import anthropic

        if structured_output not in _MODES:
            raise UserError(f"structured_output must be one of {_MODES}")
        if endpoint is not None and (base_url is not None or api_key is not None):
            raise UserError("give endpoint= or base_url=/api_key=, not both")
        self.model = model
        self.structured_output = structured_output
        endpoint = endpoint or Endpoint.for_api("anthropic", base_url=base_url, api_key=api_key)
        super().__init__(endpoint, anthropic, anthropic.Anthropic, anthropic.AsyncAnthropic, timeout_s)

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        identity["structured_output"] = self.structured_output
        return identity

    def request_arguments(self, request: BackendRequest) -> dict[str, Any]:
        """``messages.create``'s keyword arguments for ``request`` (fields the SDK does not
        know travel in ``extra_body``, merged into the JSON body by the SDK)."""
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        messages = [
            {"role": m["role"], "content": m["content"]} for m in request.messages if m["role"] != "system"
        ]
        args: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "extra_body": {"temperature": request.temperature},
        }
        if system:
            args["system"] = system
        if request.schema is not None:
            name = request.schema_name or "output"
            if self.structured_output == "tool":
                args["tools"] = [
                    {
                        "name": name,
                        "description": f"Record the {name.replace('_', ' ')}.",
                        "input_schema": dict(request.schema),
                    }
                ]
                args["tool_choice"] = {"type": "tool", "name": name}
            elif self.structured_output == "json_schema":
                args["output_config"] = {"format": {"type": "json_schema", "schema": dict(request.schema)}}
        return args

    def parse_reply(self, message: Any) -> BackendReply:
        """The ``BackendReply`` in a ``Message``: tool input as JSON, or the text blocks."""
        check_reply(message, self.sdk.types.Message, self.provider)
        parts: list[str] = []
        for block in message.content:
            if block.type == "tool_use":
                parts.append(json.dumps(block.input))
            elif block.type == "text":
                parts.append(block.text)
        usage = message.usage
        return BackendReply(
            text="\n".join(parts),
            usage=Usage(
                prompt_tokens=usage.input_tokens if usage else 0,
                completion_tokens=usage.output_tokens if usage else 0,
            ),
            model=message.model or self.model,
        )

    def complete(self, request: BackendRequest) -> BackendReply:
        with sdk_errors(self.sdk, self.provider):
            message = self.clients.sync.messages.create(**self.request_arguments(request))
            return self.parse_reply(message)

    async def acomplete(self, request: BackendRequest) -> BackendReply:
        with sdk_errors(self.sdk, self.provider):
            client = self.clients.for_running_loop()
            message = await self.within_deadline(client.messages.create(**self.request_arguments(request)))
            return self.parse_reply(message)
