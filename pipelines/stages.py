"""Stages of a pipeline recipe: each stage is the real command a user would type, printed before it runs, and
skipped on a rerun when the same command already finished and its outputs exist."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


class Stages:
    def __init__(self, out: Path, pipeline: str):
        self.pipeline = pipeline
        self.out = out
        self.marks = out / ".stages"
        self.marks.mkdir(parents=True, exist_ok=True)
        self.summary: list[str] = []

    def run(self, title: str, argv: list[str], *, outputs: list[Path] = (), always: bool = False) -> None:
        # --resume only says how to continue, not what is computed: it does not change the stage's identity.
        key = hashlib.sha256(json.dumps([a for a in argv if a != "--resume"]).encode()).hexdigest()[:16]
        mark = self.marks / f"{title.split(':')[0].replace(' ', '_')}.{key}"
        print(f"\n== {title}\n$ {shlex.join(argv)}", flush=True)
        if not always and mark.exists() and all(p.exists() for p in outputs):
            print(f"== {title}: already done, reused", flush=True)
            self.summary.append(f"{title}: reused")
            return
        t0 = time.perf_counter()
        result = subprocess.run(argv)
        if result.returncode != 0:
            sys.exit(
                f"{self.pipeline}: stage '{title}' failed (exit {result.returncode}); fix the error above and rerun "
                "the same command: finished stages are reused"
            )
        mark.write_text(shlex.join(argv))
        line = f"{title}: done in {time.perf_counter() - t0:.0f} s"
        print(f"== {line}", flush=True)
        self.summary.append(line)
