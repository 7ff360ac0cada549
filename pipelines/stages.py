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
        self.run_together(title, [argv], outputs=outputs, always=always)

    def run_together(
        self,
        title: str,
        argvs: list[list[str]],
        *,
        logs: list[Path | None] | None = None,
        outputs: list[Path] = (),
        always: bool = False,
    ) -> None:
        """Run the commands `argvs` at the same time (e.g. the members of an ensemble, one core each) as one
        stage. Command i writes to the terminal, or to the file logs[i] when one is given."""
        # --resume only says how to continue, not what is computed: it does not change the stage's identity.
        stripped = [[a for a in argv if a != "--resume"] for argv in argvs]
        # A single command keeps the key it had before a stage could run several, so old runs are reused.
        identity = json.dumps(stripped[0] if len(argvs) == 1 else stripped)
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        mark = self.marks / f"{title.split(':')[0].replace(' ', '_')}.{key}"
        logs = logs or [None] * len(argvs)
        print(f"\n== {title}", flush=True)
        for argv, log in zip(argvs, logs, strict=True):
            print(f"$ {shlex.join(argv)}" + (f" > {log} 2>&1" if log else ""), flush=True)
        if not always and mark.exists() and all(p.exists() for p in outputs):
            print(f"== {title}: already done, reused", flush=True)
            self.summary.append(f"{title}: reused")
            return
        t0 = time.perf_counter()
        processes = []
        for argv, log in zip(argvs, logs, strict=True):
            if log:
                log.parent.mkdir(parents=True, exist_ok=True)
            sink = open(log, "w") if log else None  # noqa: SIM115 - closed once the process ends
            processes.append(
                (subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT if sink else None), sink)
            )
        failed = []
        running = list(range(len(processes)))
        while running and not failed:
            time.sleep(0.2)
            for i in [i for i in running if processes[i][0].poll() is not None]:
                running.remove(i)
                if processes[i][0].returncode != 0:
                    failed.append(
                        f"exit {processes[i][0].returncode}" + (f", see {logs[i]}" if logs[i] else "")
                    )
        # One failed command fails the stage: the others stop now rather than run on for nothing (a training
        # stopped this way resumes from its last checkpoint when the stage is rerun).
        for i in running:
            processes[i][0].terminate()
        for process, sink in processes:
            process.wait()
            if sink:
                sink.close()
        if failed:
            sys.exit(
                f"{self.pipeline}: stage '{title}' failed ({'; '.join(failed)}); fix the error above and rerun "
                "the same command: finished stages are reused"
            )
        mark.write_text("\n".join(shlex.join(argv) for argv in argvs))
        line = f"{title}: done in {time.perf_counter() - t0:.0f} s"
        print(f"== {line}", flush=True)
        self.summary.append(line)
