import os
import sys

# tests/integration holds the harness module shared by all integration tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))
