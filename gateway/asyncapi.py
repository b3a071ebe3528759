"""The AsyncAPI 3.0 document of the messages syncgate publishes, generated from the registry.

One channel per routing key (each version of an event shares its channel), one message per
registered (name, v), with its JSON Schema as the payload (from the same models the consumers
validate with, `$defs` moved into components), the CloudEvents and trace headers every message
carries (common/cloudevents.py, common/tracing.py), and the AMQP 0-9-1 bindings: the durable
topic exchange and its alternate exchange (common/topology.py), persistent and mandatory
publishes. The broker's address is the deployment's business: the document names no server.

Served at GET /asyncapi.json; tests/unit/test_asyncapi.py validates it with @asyncapi/parser.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from common import cloudevents
from common.tracing import TRACEPARENT, TRACESTATE, TRACESTATE_MAX_LENGTH
from gateway.keys import SETTINGS
from gateway.message_properties import APP_ID, CONTENT_ENCODING, CONTENT_TYPE, PERSISTENT
from gateway.responses import json_response
from gateway.routing import add_get
from gateway.settings import GatewaySettings
from schemas.registry import REGISTRY, EventRegistry, EventType

AMQP_BINDING_VERSION = "0.3.0"
REF_TEMPLATE = "#/components/schemas/{model}"
UNROUTED_CHANNEL = "unrouted"
_TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


def message_id(event_type: EventType) -> str:
    return f"{event_type.routing_key}.v{event_type.v}"


def _headers(event_type: EventType, source: cloudevents.EventSource) -> dict[str, Any]:
    """The application headers of every message of `event_type`."""
    attribute = {
        cloudevents.SPECVERSION_HEADER: {"const": cloudevents.SPECVERSION},
        cloudevents.ID_HEADER: {
            "type": "string",
            "format": "uuid",
            "description": "CloudEvents `id`: the event id, as in the body and message_id.",
        },
        cloudevents.SOURCE_HEADER: {
            "const": source.source,
            "description": "CloudEvents `source` (SYNCGATE_CLOUDEVENTS_SOURCE).",
        },
        cloudevents.TYPE_HEADER: {"const": event_type.name, "description": "The event name."},
        cloudevents.TIME_HEADER: {
            "type": "string",
            "format": "date-time",
            "description": "CloudEvents `time`: the body's `ts`, as RFC 3339 in UTC.",
        },
        cloudevents.DATASCHEMA_HEADER: {
            "const": source.dataschema(event_type.schema_file_name),
            "description": "CloudEvents `dataschema`: where this message's schema is.",
        },
        cloudevents.SUBJECT_HEADER: {
            "type": "string",
            "description": "CloudEvents `subject`: the body's `user.id`.",
        },
    }
    return {
        "type": "object",
        "description": (
            "CloudEvents 1.0 in binary content mode: the attributes are headers named with the "
            "`cloudEvents:` prefix (the CloudEvents AMQP binding), `datacontenttype` is the "
            "AMQP content_type, and the body is the event. W3C Trace Context travels in "
            "`traceparent` and `tracestate`. Copies the consumer republishes (retries, the "
            "DLQ) keep all of these and add `x-syncgate-*` headers."
        ),
        "required": ["v", *attribute],
        "properties": {
            "v": {"const": event_type.v, "description": "The event's version, as in the body."},
            **attribute,
            TRACEPARENT: {
                "type": "string",
                "pattern": _TRACEPARENT_PATTERN,
                "description": "W3C traceparent of the gateway's publish span.",
            },
            TRACESTATE: {
                "type": "string",
                "maxLength": TRACESTATE_MAX_LENGTH,
                "description": "W3C tracestate, passed on from the request.",
            },
        },
    }


def _exchange(name: str, kind: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "durable": True, "autoDelete": False}


def build_asyncapi(settings: GatewaySettings, registry: EventRegistry = REGISTRY) -> dict[str, Any]:
    topology, source = settings.topology, settings.event_source
    event_types = list(registry)
    refs, top = models_json_schema(
        [(event_type.model, "validation") for event_type in event_types],
        ref_template=REF_TEMPLATE,
    )
    schemas = dict(top.get("$defs", {}))
    for schema in schemas.values():
        schema.pop("$id", None)  # an $id would move the base that the refs resolve against
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type in event_types:
        key = message_id(event_type)
        messages[key] = {
            "name": event_type.name,
            "title": f"{event_type.name} v{event_type.v}",
            "summary": (event_type.model.__doc__ or event_type.name).strip().splitlines()[0],
            "contentType": CONTENT_TYPE,
            "headers": _headers(event_type, source),
            "payload": refs[(event_type.model, "validation")],
            "bindings": {
                "amqp": {
                    "contentEncoding": CONTENT_ENCODING,
                    "messageType": event_type.name,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
        channel = channels.setdefault(
            event_type.routing_key,
            {
                "address": event_type.routing_key,
                "title": f"Routing key {event_type.routing_key}",
                "description": (
                    f"Published to the topic exchange `{topology.exchange}` with this routing "
                    f"key. Its alternate exchange `{topology.unrouted}` keeps what no queue is "
                    "bound for. Declare nothing on the exchange (or declare it passively): "
                    "bind a queue of your own."
                ),
                "messages": {},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": _exchange(topology.exchange, "topic"),
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }
                },
                "x-alternate-exchange": topology.unrouted,
            },
        )
        channel["messages"][key] = {"$ref": f"#/components/messages/{key}"}
        operations[f"publish.{key}"] = {
            "action": "send",
            "title": f"Publish {event_type.name} v{event_type.v}",
            "summary": "Published persistent and mandatory; the gateway answers only once the "
            "broker confirmed it.",
            "channel": {"$ref": f"#/channels/{event_type.routing_key}"},
            "messages": [{"$ref": f"#/channels/{event_type.routing_key}/messages/{key}"}],
            "bindings": {
                "amqp": {
                    "deliveryMode": PERSISTENT,
                    "mandatory": True,
                    "timestamp": True,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
    channels[UNROUTED_CHANNEL] = {
        "address": None,
        "title": "Unroutable events",
        "description": (
            f"The fanout exchange `{topology.unrouted}`, alternate exchange of "
            f"`{topology.exchange}`, and its quorum queue of the same name: every event no "
            "binding matched, as it was published."
        ),
        "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in sorted(messages)},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": _exchange(topology.unrouted, "fanout"),
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "syncgate events",
            "version": "1",
            "description": (
                f"The events syncgate publishes to RabbitMQ (AMQP 0-9-1), from `{APP_ID}`. "
                "Every message is a CloudEvent in binary content mode, with W3C trace context."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def setup_asyncapi(app: web.Application) -> None:
    """GET /asyncapi.json."""
    document: dict[str, Any] = {}

    async def asyncapi_json(request: web.Request) -> web.Response:
        if not document:
            document.update(build_asyncapi(request.app[SETTINGS]))
        return json_response(document)

    add_get(app, "/asyncapi.json", asyncapi_json)
