"""Where numba pays for itself: the cost kernels' Python engine vs numba's (issue 17). Prints JSON.

Per target kind (CPU rpi5, MAC array systolic-16x16, MCU cortex-m7) on zoo resnet18's and
mobilenet_v2's layer tables, each in a fresh process with numba's on-disk cache warm:
- `python_us_per_eval`: CPU microseconds per layer-evaluation (layer x bit choice) of
  `hwmodels.cost.evaluate` in the Python engine (EDGESIM_KERNELS=python), glue included;
- `numba_first_call_s`: CPU seconds of the first compiled call in a process that has not
  imported numba (numba's import, loading the cached kernels, the call);
- `numba_us_per_eval`: the same per-evaluation figure compiled, after that first call;
- `break_even_evals`: first-call seconds / (Python - numba) per evaluation, the work above
  which compiling wins; `hwmodels.kernels.jit.NUMBA_MIN_WORK` is set from these.

Usage: python bench/bench_engines.py [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TARGETS = {"cpu": "rpi5", "macarray": "systolic-16x16", "mcu": "cortex-m7"}
MODELS = ("resnet18", "mobilenet_v2")

CHILD = """import json, os, sys, time
import numpy as np
from compiler.frontend import load
from edgesim import zoo
from hwmodels import cost
from hwmodels.target import load_target
target, table = load_target(sys.argv[1]), load(zoo.build(sys.argv[2])).layer_table()
bits = np.array([[8, 8], [4, 8], [32, 32], [16, 16]])
evals = len(table) * len(bits)

def per_eval():
    cost.evaluate(table, bits, target)
    start, n = time.process_time(), 0
    while time.process_time() - start < 0.5:
        cost.evaluate(table, bits, target)
        n += 1
    return 1e6 * (time.process_time() - start) / n / evals

os.environ['EDGESIM_KERNELS'] = 'python'
python = per_eval()
assert 'numba' not in sys.modules
os.environ['EDGESIM_KERNELS'] = 'numba'
start = time.process_time()
cost.evaluate(table, bits[:1], target)
first = time.process_time() - start
print(json.dumps({'python_us_per_eval': python, 'numba_first_call_s': first,
                  'numba_us_per_eval': per_eval()}))
"""


def _child(target: str, model: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    env.pop("EDGESIM_KERNELS", None)
    out = subprocess.run([sys.executable, "-c", CHILD, target, model], check=True, text=True,
                         capture_output=True, env=env, cwd=HERE)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    _child("rpi5", "digits_cnn")  # warm numba's cache for what follows
    result: dict[str, dict] = {}
    for kind, target in TARGETS.items():
        for model in MODELS:
            runs = [_child(target, model) for _ in range(args.rounds)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            gain = (med["python_us_per_eval"] - med["numba_us_per_eval"]) * 1e-6
            med["break_even_evals"] = round(med["numba_first_call_s"] / gain)
            result[f"{kind}/{model}"] = med
    print(json.dumps({"rounds": args.rounds, "load_avg": os.getloadavg(), "cases": result},
                     indent=1))


if __name__ == "__main__":
    main()
