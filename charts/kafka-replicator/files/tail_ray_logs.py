"""Print the replicator actors' log lines to stdout, for `kubectl logs -c replicator-logs`.

Ray writes what each worker process prints to /tmp/ray/session_latest/logs/worker-*.out
and worker-*.err, not to the container's stdout. This follows those files (new ones
too) and prints every line as "(<actor> pid=<pid>) <line>", the way Ray shows actor
lines on the driver.
"""

import glob
import os
import sys
import time

LOG_DIR = os.environ.get("RAY_LOG_DIR", "/tmp/ray/session_latest/logs")
PATTERNS = ("worker-*.out", "worker-*.err")


class Followed:
    def __init__(self, path: str) -> None:
        self.file = open(path, encoding="utf-8", errors="replace")
        self.pid = os.path.splitext(os.path.basename(path))[0].rsplit("-", 1)[-1]
        self.name = "worker"
        self.partial = ""

    def lines(self):
        chunk = self.file.read()
        if not chunk:
            return
        text = self.partial + chunk
        *complete, self.partial = text.split("\n")
        for line in complete:
            if line.startswith(":actor_name:"):
                self.name = line[len(":actor_name:"):].strip() or self.name
                continue
            if line.startswith(":task_name:") or line.startswith(":job_id:"):
                continue
            yield f"({self.name} pid={self.pid}) {line}\n"


def main() -> None:
    followed: dict[str, Followed] = {}
    while True:
        for pattern in PATTERNS:
            for path in glob.glob(os.path.join(LOG_DIR, pattern)):
                real = os.path.realpath(path)
                if real not in followed:
                    try:
                        followed[real] = Followed(real)
                    except OSError:
                        continue
        for real, entry in list(followed.items()):
            try:
                sys.stdout.writelines(entry.lines())
            except OSError:
                followed.pop(real).file.close()
        sys.stdout.flush()
        time.sleep(1)


if __name__ == "__main__":
    main()
