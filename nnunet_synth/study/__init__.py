"""``nnunet-synth study CONFIG``: one declarative config from datasets to a tested, cross-site answer.

- ``config``: the TOML file, read and checked (every problem refused before anything runs);
- ``steps``: the config turned into a chain of steps (commands, what they read and write, what they wait for);
- ``run``: the chain run resumably through ``recipes.StepRunner`` (trainings side by side with ``--gpus``);
- ``report``: ``report.md`` and ``results.json`` from the steps' outputs and ``cross-eval``'s summaries.

docs/study.md documents the config field by field.
"""
