"""Grading speed, one run: each reward path against its unprotected peer on the same batch.

  * math: MathVerifier (worker pool, a killable deadline per answer) against calling
    math-verify in this process, one answer after another (no deadline: unsafe, but
    the floor for the pool's overhead);
  * code: sandbox.run_tests_batch (namespaces, fresh uid, Landlock, limits) against
    running the same program + tests in a plain `python -I -c` subprocess each.

    python benchmarks/rewards.py            # 256 math answers, 64 programs
    python benchmarks/rewards.py --quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from jaxlayer.tasks import rewards, sandbox


def math_batch(size: int) -> tuple[list[str], list[str]]:
  forms = [("1/2", "so \\boxed{\\frac{1}{2}}"), ("72", "$72$"),
           ("\\sqrt{2}/2", "\\boxed{\\frac{\\sqrt2}{2}}"), ("3", "The answer is 4.")]
  pairs = [forms[index % len(forms)] for index in range(size)]
  return [reference for reference, _ in pairs], [completion for _, completion in pairs]


def in_process_math(references: list[str], completions: list[str]) -> list[float]:
  rewards._init_math_worker(None)
  return [rewards._verify_math_answer(reference, completion)
          for reference, completion in zip(references, completions)]


def plain_subprocess(program: str, tests: list[str]) -> bool:
  source = program + "\n" + "\n".join(tests)
  return subprocess.run([sys.executable, "-I", "-c", source], capture_output=True,
                        timeout=30).returncode == 0


def timed(function, *args):
  start = time.perf_counter()
  result = function(*args)
  return time.perf_counter() - start, result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  n_math, n_code = (32, 8) if args.quick else (256, 64)
  workers = os.cpu_count() or 1
  print(f"{workers} CPUs; math batch {n_math}, code batch {n_code}")

  references, completions = math_batch(n_math)
  with rewards.MathVerifier(workers=workers, timeout=5.0) as verifier:
    verifier.grade(references[:workers], completions[:workers])  # workers started and warm
    pool_seconds, pool_scores = timed(verifier.grade, references, completions)
  in_process_math(references[:workers], completions[:workers])  # the same warm-up here
  local_seconds, local_scores = timed(in_process_math, references, completions)
  assert pool_scores == local_scores, "the pool and the in-process grader disagree"
  print(f"math  pool {pool_seconds:.3f}s  in-process {local_seconds:.3f}s  "
        f"ratio {pool_seconds / local_seconds:.2f}  "
        f"({n_math / pool_seconds:.0f} answers/s in the pool)")

  program = "def add(a, b):\n  return a + b"
  tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
  sandbox.run_tests(program, tests)  # namespace probe done once
  sandboxed_seconds, results = timed(sandbox.run_tests_batch, [program] * n_code, [tests] * n_code)
  with ThreadPoolExecutor(max_workers=workers) as executor:
    plain_seconds, plain = timed(
        lambda: list(executor.map(plain_subprocess, [program] * n_code, [tests] * n_code)))
  assert all(result.all_passed for result in results) and all(plain)
  print(f"code  sandbox {sandboxed_seconds:.3f}s  plain subprocess {plain_seconds:.3f}s  "
        f"ratio {sandboxed_seconds / plain_seconds:.2f}  "
        f"({n_code / sandboxed_seconds:.0f} programs/s sandboxed)")


if __name__ == "__main__":
  main()
