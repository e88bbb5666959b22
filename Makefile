# Convenience targets; each bootstraps what it needs.
.PHONY: bootstrap test test-full lint demo bench protos clean-lab

bootstrap:
	./scripts/bootstrap.sh

test:
	./scripts/test.sh

test-full:
	./scripts/test.sh --full

lint: bootstrap
	.venv/bin/python -m ruff check .
	.venv/bin/python -m mypy

demo:
	./scripts/demo.sh

bench: bootstrap
	.venv/bin/sensilla-bench

protos: bootstrap
	.venv/bin/python scripts/gen_protos.py --force

clean-lab: bootstrap
	.venv/bin/sensilla lab down --all
