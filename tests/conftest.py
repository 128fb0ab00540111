import sys
from pathlib import Path

# The oracle and the case families are plain modules beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
