"""The demo: the staged pipeline on the built-in corpus, its measurements (context, RL, quantization)
and its report. Orchestration only: nothing in the library imports it."""
