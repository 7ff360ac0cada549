"""Stages of a pipeline recipe: each stage is the real command a user would type, printed before it runs, and
skipped on a rerun when the same command (with the same contents of the config files it names) already finished,
its outputs exist and no stage before it changed anything in this run. A stage that always runs (an idempotent,
resuming command such as `bank build` or `mixtures generate --resume`) counts as a change only where the stores
it names as outputs now say something else (their zarr.json: fingerprints, completeness)."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
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
        # Set once a stage runs: every later stage runs too, as it may read what that one rewrote.
        self.upstream_ran = False

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
        # A config file's contents are part of what a command computes (the recipes rewrite theirs per run).
        configs = sorted(
            {_digest(argv[i + 1]) for argv in stripped for i, a in enumerate(argv[:-1]) if a == "--config"}
        )
        identity = json.dumps((stripped[0] if len(argvs) == 1 else stripped, configs))
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        mark = self.marks / f"{title.split(':')[0].replace(' ', '_')}.{key}"
        logs = logs or [None] * len(argvs)
        print(f"\n== {title}", flush=True)
        for argv, log in zip(argvs, logs, strict=True):
            print(f"$ {shlex.join(argv)}" + (f" > {log} 2>&1" if log else ""), flush=True)
        if not always and not self.upstream_ran and mark.exists() and all(p.exists() for p in outputs):
            print(f"== {title}: already done, reused", flush=True)
            self.summary.append(f"{title}: reused")
            return
        before = _stores_state(outputs)
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
        if not always or _stores_state(outputs) != before:
            self.upstream_ran = True
        line = f"{title}: done in {time.perf_counter() - t0:.0f} s"
        print(f"== {line}", flush=True)
        self.summary.append(line)


def _digest(path: str) -> str:
    """A config file's name and the SHA-256 of its bytes ("missing" where it does not exist yet)."""
    try:
        return f"{path}#{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"
    except OSError:
        return f"{path}#missing"


def _stores_state(paths: list[Path]) -> str:
    """What the Zarr stores at ``paths`` say about themselves: the SHA-256 of each one's zarr.json (a folder of
    stores: each member's), or of the file itself; unchanged when a resuming command found them finished."""
    digest = hashlib.sha256()
    for path in paths:
        if path.is_dir():
            metadata = (
                [path / "zarr.json"] if (path / "zarr.json").exists() else sorted(path.glob("*/zarr.json"))
            )
        else:
            metadata = [path]
        for meta in metadata:
            digest.update(str(meta).encode())
            digest.update(meta.read_bytes() if meta.is_file() else b"missing")
    return digest.hexdigest()


def resume_or_restart(config_path: Path) -> list[str]:
    """`xrdmodels train`'s resume flag for the training config at `config_path`: ["--resume"] where its `out_dir`
    holds a run of that config (its config.json agrees on every field the config sets: an interrupted run goes
    on); a run of another config (another budget or schedule) is moved aside to `<out_dir>.replaced`, replacing
    an older one there, and [] trains afresh, as resuming it would continue the old run under a changed schedule."""
    config = json.loads(Path(config_path).read_text())
    run_dir = Path(config["out_dir"])
    if not (run_dir / "last.pt").exists():
        return []
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and all(saved.get(key) == value for key, value in config.items()):
        return ["--resume"]
    aside = run_dir.with_name(run_dir.name + ".replaced")
    shutil.rmtree(aside, ignore_errors=True)
    run_dir.rename(aside)
    print(f"   {run_dir} holds a run of another config: moved to {aside}; training afresh", flush=True)
    return []
