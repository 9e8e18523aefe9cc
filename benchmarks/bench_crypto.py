"""Crypto throughput beside python-paillier: the code behind ``fedguard bench``.

Run: ``.venv/bin/python benchmarks/bench_crypto.py [--json] [--values N] ...``
(the options of ``fedguard bench``).
"""

import sys

from fedguard.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["bench"]
    main()
