"""500 sequential jobs through the real stack: every one succeeds and nothing accumulates.

Resource assertions only, no timing: between job 100 (after warm-up) and job 500 the handler's RSS grows by
less than 10 %, its open file descriptors and threads stay flat (a small fixed slack), the stand-in's input/
and output/ folders do not grow (clean-up works) and ComfyUI's history does not fill up. Every tenth job
uploads an input image, so input clean-up is exercised too. Figures: bench/bench_soak.py.
"""

from __future__ import annotations

import requests

from tests.soak import soak
from tests.stack import Stack

JOBS = 500
WARM = 100
RSS_GROWTH_MAX = 0.10
FD_SLACK = 3
THREAD_SLACK = 3


def test_500_jobs_succeed_and_the_handler_does_not_accumulate(stack: Stack) -> None:
    handler_pid = stack.pid_of("handler")
    run = soak(stack, JOBS, sample_at=set(range(WARM, JOBS + 1, 50)))
    assert run.failures == [], run.failures[:5]
    assert stack.pid_of("handler") == handler_pid, "the handler restarted during the soak"

    warm, last = run.at(WARM), run.at(JOBS)
    growth = (last.rss - warm.rss) / warm.rss
    table = "\n".join(
        f"job {s.job}: rss {s.rss / 1e6:.1f} MB, fds {s.fds}, threads {s.threads}, "
        f"input/ {s.input_files}, output/ {s.output_files}"
        for s in run.samples
    )
    assert growth < RSS_GROWTH_MAX, f"handler RSS grew {growth:.1%} from job {WARM} to {JOBS}\n{table}"
    assert max(s.fds for s in run.samples) <= warm.fds + FD_SLACK, table
    assert max(s.threads for s in run.samples) <= warm.threads + THREAD_SLACK, table
    # Clean-up keeps up: after every sampled job the folders are back to what they held before the soak.
    assert all((s.input_files, s.output_files) == run.baseline for s in run.samples), (run.baseline, table)

    # ComfyUI's history holds nothing of the 500 prompts (CLEANUP_HISTORY). The last job's entry is
    # removed last in its clean-up, which runs after the answer: the test waits for it.
    def history_left() -> set[str]:
        return set(requests.get(f"{stack.comfy_url}/history", timeout=10).json()) & set(run.prompt_ids)

    stack.wait_for(lambda: not history_left(), 10, what="ComfyUI's history to hold none of the soak's prompts")
