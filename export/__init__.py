"""``python -m export``: append peak layers to a confidence-map model, export, verify, serve.

Subcommands, one module each: ``demo`` (export/demo.py), ``model`` (export/model.py),
``run`` (export/run.py). The command line mirrors each module's ``run(**options)``.
"""
