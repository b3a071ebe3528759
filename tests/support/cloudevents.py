"""What a consumer on another stack writes to read our messages with the stock CloudEvents SDK:
a few lines from an AMQP 0-9-1 delivery to one of the SDK's bindings."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import amqp, http

from common.cloudevents import PREFIX


def read_through_amqp_binding(message: AbstractIncomingMessage) -> BaseCloudEvent:
    """0-9-1 headers are the AMQP binding's application properties, `cloudEvents:` names and
    all, and `content_type` its `content-type` property: the SDK's AMQP binding reads them."""
    return amqp.from_binary_event(
        amqp.AMQPMessage(
            properties={"content-type": message.content_type},
            application_properties=dict(message.headers),
            application_data=message.body,
        )
    )


def read_through_http_binding(message: AbstractIncomingMessage) -> BaseCloudEvent:
    """The prefix stripped: each attribute becomes a binary-mode `ce-` header, and
    `content_type` the Content-Type, as the SDK's HTTP binding reads them."""
    headers = {
        f"ce-{name[len(PREFIX) :]}": value
        for name, value in message.headers.items()
        if name.startswith(PREFIX) and isinstance(value, str)
    }
    headers["content-type"] = message.content_type or ""
    return http.from_http_event(http.HTTPMessage(headers=headers, body=message.body))
