# Developer entry points. Everything runs inside .venv, which `make setup` creates and keeps fresh.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo bench lock colcon-msgs clean

setup:            ## create/refresh the venv, build threedmoe_msgs, self-check (idempotent)
	@VENV=$(abspath $(VENV)) scripts/setup.sh

test: setup       ## the test suite (what CI runs)
	$(PY) -m pytest threedmoe_ros/test $(PYTEST_ARGS)

demo: setup       ## the main job: closed-loop evaluation over ROS with the embedded policy; prints the success table
	$(PY) -m threedmoe_ros.demo

bench: setup      ## all benchmarks; JSON under bench/results/
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lock:             ## re-resolve requirements/direct.txt into requirements/lock.txt
	scripts/lock.sh

colcon-msgs: setup  ## build threedmoe_msgs with colcon against the venv's ROS wheels (into build/colcon_ws)
	scripts/colcon_msgs.sh

clean:
	rm -rf build .stamps
