"""`Job`: what every copy of one job shares.

Slots, single-flight tables, progress and the retry policy are per job, so a
mirror of a thousand images is one graph with one set of limits. A job can be
told to stop (`Job.stop`): from then on no transfer starts, a blob is not
retried, chunked uploads end at their next chunk boundary, and what was
already sending its one PUT finishes, since a registry cannot cancel a
monolithic upload that broke off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import RetryPolicy
from ..digest import Digest
from ..errors import Interrupted
from ..store import Repo
from .limits import Slots
from .progress import Progress
from .singleflight import SingleFlight

__all__ = ["Job"]


@dataclass(eq=False)
class Job:
    """State shared by every copy of one job."""

    slots: Slots
    progress: Progress = field(default_factory=Progress)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    blobs: SingleFlight[None] = field(default_factory=SingleFlight)
    manifests: SingleFlight[None] = field(default_factory=SingleFlight)
    #: Uploads by (target host, digest): a blob going to two repos of one
    #: registry is uploaded once and mounted into the other.
    uploads: SingleFlight[None] = field(default_factory=SingleFlight)
    #: (host, digest) -> repos known to hold the blob, for cross-repository mounts.
    holders: dict[tuple[str, Digest], list[Repo]] = field(default_factory=dict)
    #: Manifest references walked so far, by `manifests` key: parent -> children.
    #: Two tasks entering a loop at different manifests would each wait for the
    #: other's single-flight call forever; `refer` sees the loop close instead.
    references: dict[str, set[str]] = field(default_factory=dict)
    #: Set by `stop`.
    stopping: bool = False

    def refer(self, parent: str, child: str) -> bool:
        """Record that ``parent`` references ``child``; False if ``child`` reaches ``parent``."""
        seen: set[str] = set()
        todo = [child]
        while todo:
            node = todo.pop()
            if node == parent:
                return False
            if node not in seen:
                seen.add(node)
                todo.extend(self.references.get(node, ()))
        self.references.setdefault(parent, set()).add(child)
        return True

    def holds(self, repo: Repo, digest: Digest) -> None:
        """Record that ``repo`` now holds ``digest``."""
        known = self.holders.setdefault((repo.host, digest), [])
        if all(r.key != repo.key for r in known):
            known.append(repo)

    def stop(self) -> None:
        """Start no new transfer from now on; let the ones in flight end."""
        self.stopping = True

    def is_stopping(self) -> bool:
        """Whether `stop` was called."""
        return self.stopping

    def check_running(self) -> None:
        """Raise `Interrupted` when the job was told to stop."""
        if self.stopping:
            raise Interrupted("interrupted: the job was told to stop")
