"""What the gateway, the consumers and the CLI share: broker topology and connections,
definitions.json, logging, process start-up, and the stores."""
