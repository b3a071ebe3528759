.PHONY: run test bench

# Install, make sure RabbitMQ is up, run the gateway and one consumer (Ctrl-C stops both).
run:
	./scripts/run.sh

# Install the test tools, then lint, type-check and run every test against the real broker.
test:
	./scripts/test.sh
