"""OpenAI chat completions, and every server that speaks that wire format.

``OpenAIBackend("gpt-4o-mini")`` talks to OpenAI with ``OPENAI_API_KEY``;
``OpenAIBackend("qwen2.5", base_url="http://127.0.0.1:8080/v1")`` talks to vLLM, Ollama,
llama.cpp's ``llama-server`` or LM Studio, and never sends ``OPENAI_API_KEY`` there (pass
``api_key=`` if that server wants one). ``endpoint=`` takes a resolved ``Endpoint``
(a managed llama.cpp server, a test judge).
"""

from __future__ import annotations

from typing import Any

from ..errors import MalformedReplyError, UserError
from ..types import TokenLogprob, Usage
from ._clients import SDKBackend
from ._errors import check_reply, sdk_errors
from .base import BackendReply, BackendRequest
from .endpoint import Endpoint

__all__ = ["OpenAIBackend"]


class OpenAIBackend(SDKBackend):
    """``structured_output``: ``"json_schema"`` (native, default) or ``"prompt"`` (the
    instructions ask for JSON and the tolerant parser reads it), for servers without schemas."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        endpoint: Endpoint | None = None,
        timeout_s: float = 60.0,
        structured_output: str = "json_schema",
        logprobs: bool | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        import openai

        if structured_output not in ("json_schema", "prompt"):
            raise UserError("structured_output must be 'json_schema' or 'prompt'")
        if endpoint is not None and (base_url is not None or api_key is not None):
            raise UserError("give endpoint= or base_url=/api_key=, not both")
        self.model = model
        self.structured_output = structured_output
        # Chat-completions logprobs: OpenAI and llama.cpp/vLLM return them.
        self.supports_logprobs = True if logprobs is None else logprobs
        self.extra_body = dict(extra_body or {})
        endpoint = endpoint or Endpoint.for_api("openai", base_url=base_url, api_key=api_key)
        super().__init__(endpoint, openai, openai.OpenAI, openai.AsyncOpenAI, timeout_s)

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        identity["structured_output"] = self.structured_output
        if self.extra_body:
            identity["extra_body"] = self.extra_body
        return identity

    def request_arguments(self, request: BackendRequest) -> dict[str, Any]:
        """``chat.completions.create``'s keyword arguments for ``request`` (fields the SDK
        does not know travel in ``extra_body``, merged into the JSON body by the SDK)."""
        args: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.schema is not None and self.structured_output == "json_schema":
            args["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name or "output",
                    "schema": dict(request.schema),
                    "strict": True,
                },
            }
        if request.logprobs and self.supports_logprobs:
            args["logprobs"] = True
            args["top_logprobs"] = 10
        if self.extra_body:
            args["extra_body"] = self.extra_body
        return args

    def parse_reply(self, completion: Any) -> BackendReply:
        """The ``BackendReply`` in a ``ChatCompletion`` (``MalformedReplyError`` if none)."""
        check_reply(completion, self.sdk.types.chat.ChatCompletion, self.provider)
        if not completion.choices:
            raise MalformedReplyError(f"{self.provider}: reply has no choices", provider=self.provider)
        choice = completion.choices[0]
        usage = completion.usage
        logprobs = None
        content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
        if content:
            logprobs = tuple(
                TokenLogprob(
                    token=item.token,
                    logprob=item.logprob,
                    top={top.token: top.logprob for top in (item.top_logprobs or [])},
                )
                for item in content
            )
        return BackendReply(
            # a refusal has no content: its text is what a re-ask and a ParseError show
            text=choice.message.content or getattr(choice.message, "refusal", None) or "",
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            model=completion.model or self.model,
            logprobs=logprobs,
        )

    def complete(self, request: BackendRequest) -> BackendReply:
        with sdk_errors(self.sdk, self.provider):
            completion = self.clients.sync.chat.completions.create(**self.request_arguments(request))
            return self.parse_reply(completion)

    async def acomplete(self, request: BackendRequest) -> BackendReply:
        with sdk_errors(self.sdk, self.provider):
            client = self.clients.for_running_loop()
            completion = await self.within_deadline(
                client.chat.completions.create(**self.request_arguments(request))
            )
            return self.parse_reply(completion)
