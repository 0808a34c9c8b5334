"""pytest configuration: makes tests/ importable so test files can import rnn_helpers.
Not a place for test logic."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
