"""What the gateway, the consumers and the CLI share: broker topology, connections, logging."""
