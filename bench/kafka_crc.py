"""What kafka-python's record checksum costs for one published list, in pure Python and in C.

    .venv/bin/python bench/kafka_crc.py --json-out bench/results/session15/crc32c-micro.json

kafka-python checks the CRC-32C of every record batch it reads (and computes it for every batch it
writes). It uses the ``crc32c`` package when it can import it, else a pure-Python table loop.
avrec depends on ``kafka-python[crc32c]``; this measures what that saves on a list as the
worker publishes it (``streams.records.encode_list``, 20 items with a reason each).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka.record import util  # noqa: E402
from kafka.record._crc32c import crc as crc_python  # noqa: E402

from bench.report import emit  # noqa: E402
from streams.records import encode_list  # noqa: E402


def per_call_us(fn, data: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(rounds):
            fn(data)
        best = min(best, (time.perf_counter() - t) / rounds * 1e6)
    return round(best, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--json-out")
    args = p.parse_args()
    items = [(f"ml:{i}", 0.123456, ["similar to Toy Story (1995), which you liked"]) for i in range(20)]
    data = encode_list("ml:42", items, "ranker-0123abcd", "e" * 32, time.time(), time.time())
    out = {"list_bytes": len(data), "kafka_python_uses": "C" if util.crc32c_c else "pure Python",
           "pure_python_us": per_call_us(crc_python, data, args.rounds)}
    if util.crc32c_c is not None:
        out["c_us"] = per_call_us(util.crc32c_c, data, args.rounds * 100)
    emit(out, args.json_out)


if __name__ == "__main__":
    main()
