.PHONY: run test bench

# Install, make sure RabbitMQ is up, run the gateway and one consumer (Ctrl-C stops both).
run:
	./scripts/run.sh

# Install the test tools, then lint, type-check and run every test against the real broker.
test:
	./scripts/test.sh

# Measure syncgate against its ceilings and a FastAPI + FastStream peer; prints one table.
# Pass options with ARGS, e.g. `make bench ARGS=--quick` or `make bench ARGS="--soak 60"`.
bench:
	./scripts/bench.sh $(ARGS)
