"""The vocabulary every layer shares; imports nothing else of lib.

records (configs, requests, samples as dataclasses), metrics (vLLM's metric definitions
per request and per level), outcome (the words a run, lane or level ends with),
usage (the one-line error both command lines print), csv_safe (spreadsheet-safe cells).
"""
