# Terrarium. `make run` serves the dashboard, `make test` runs every test.
# Pass pytest arguments with ARGS, e.g. make test ARGS="tests/runtime -k oom".
.PHONY: setup run test bench clean

setup:
	scripts/setup.sh

run:
	scripts/run.sh

test:
	scripts/test.sh $(ARGS)

bench:
	@if [ -x bench/run_all.sh ]; then bench/run_all.sh; \
	elif [ -f bench/run_all.sh ]; then bash bench/run_all.sh; \
	else echo "bench: bench/run_all.sh does not exist yet"; fi

clean:
	rm -rf test-output
