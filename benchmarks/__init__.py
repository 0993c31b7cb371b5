"""unetkit benchmarks: `python -m benchmarks.run`; see benchmarks/NOTES.md."""
