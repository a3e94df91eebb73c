"""avrec streaming side: Faust app, agents, topics, records, scoring, CLI.

Kept import-light on purpose: Triton's Python models import ``encoders``, which
imports the root exception from here.
"""
