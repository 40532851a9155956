"""Stage one on a Ray cluster: the files to compute become a Ray dataset, actors embed them and commit shards.

The driver (:mod:`featcache.extraction.run`) lists, stats and decides what to compute exactly as for
the local engine, and folds the shards in under the cache's lock at the end. Here the files to
compute are cut into blocks on the driver (``ray.data.from_items``) and mapped with
``map_batches`` over a pool of actors. Each actor builds the model once, from the same backbone
object and weights path as the driver, and checks that its identity (weights hash included) is the
fingerprint's before computing anything. For each batch it reads, hashes and decodes the files
(:func:`featcache.extraction.pipeline.prepare_one`, the one place files are read), skips contents
the cache already holds, embeds the rest and commits them as one shard into the cache's shards
folder by an atomic rename. Only metadata (path, hash, reason) travels back to the driver.

The cluster must see the data folder, the cache's folder and the weights file at the same paths
(a shared filesystem, or the same folders on every node). Ray restarts a killed actor and retries
its batch; a killed driver loses only the batches in flight, since every committed shard is reused
by the next run, with either engine. Nothing here is imported unless ``engine="ray"``.
"""

from __future__ import annotations

import logging
import math
import os
import re

import numpy as np

from featcache import errors as featcache_errors
from featcache.cache.layout import QuarantineEntry
from featcache.cache.shards import ShardWriter, VectorPool, shards_dir
from featcache.config import RAY_ADDRESS_ENV, ExtractConfig
from featcache.errors import ConfigError, FeatcacheError
from featcache.extraction.fingerprint import fingerprint_fields, fingerprint_of
from featcache.extraction.pipeline import KNOWN, Computed, ListedFile, embed_pixels, prepare_one
from featcache.extraction.store import open_source
from featcache.progress import progress_bar

log = logging.getLogger(__name__)


def require_ray():
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--engine ray needs Ray; install it with: pip install 'featcache[ray]'") from None
    return ray


def compute_on_ray(
    new: list[ListedFile], pool: VectorPool, backbone, config: ExtractConfig, fields: dict, progress: bool
) -> Computed:
    """Compute ``new`` on a Ray cluster (``fields``: the fingerprint fields of the run); the same
    :class:`Computed` as the local pipeline's."""
    done = Computed()
    if not new:
        return done
    ray = require_ray()
    started_here = _connect(ray, config)
    try:
        known = ray.put(_sorted_hashes(pool))
        actors = _actors(ray, config)
        dataset = ray.data.from_items(
            [{"relpath": f.sample.relpath, "size": f.size} for f in new],
            override_num_blocks=min(len(new), max(actors, min(-(-len(new) // config.batch_size), 1000))),
        )
        mapped = dataset.map_batches(
            ShardActor,
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=config.ray_cpus,
            num_gpus=config.ray_gpus,
            fn_constructor_args=(backbone, config, fields, known),
        )
        with progress_bar(len(new), progress, "extract (ray)", smoothing=0.1) as bar:
            for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                _fold(done, batch)
                bar.update(len(batch["relpath"]))
    except FeatcacheError:
        raise
    except Exception as exc:  # a RayTaskError wraps what failed on a worker
        raise _as_error(exc) from None
    finally:
        if started_here:
            ray.shutdown()
    return done


def _connect(ray, config: ExtractConfig) -> bool:
    """Join the cluster at ``config.ray_address`` (else ``$RAY_ADDRESS``, else start a local Ray); True when
    this call started Ray, which is then shut down at the end."""
    if ray.is_initialized():
        return False
    from ray.data import DataContext

    address = config.ray_address or os.environ.get(RAY_ADDRESS_ENV) or "local"  # "local": always a new one
    _quiet_ray()
    try:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address} ({str(exc).splitlines()[0][:160]}); "
            f"start it with `ray start --head` or pass the right --ray-address"
        ) from None
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return True


def _quiet_ray() -> None:
    """Ray's start-up and execution logs (Python and C++) only with -v, as for TensorFlow's."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # it warns that its progress bars are off


def _actors(ray, config: ExtractConfig) -> int:
    """How many actors embed: ``--ray-actors``, else as many as the cluster's CPUs allow."""
    if config.ray_actors:
        return config.ray_actors
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus // max(config.ray_cpus, 1e-6)))


def _sorted_hashes(pool: VectorPool) -> np.ndarray:
    """Every content hash the cache holds a vector or a quarantine reason for, sorted, as fixed-width bytes."""
    bad = np.array(list(pool.quarantine), dtype="S64").reshape(len(pool.quarantine))
    return np.unique(np.concatenate([pool.keys().astype("S64"), bad]))


def _fold(done: Computed, batch: dict) -> None:
    """Add what an actor reports for one batch of files to ``done``."""
    for relpath, sha, reason in zip(batch["relpath"], batch["sha256"], batch["reason"]):
        if sha:
            done.hashes[str(relpath)] = str(sha)
        else:
            done.unreadable.append(QuarantineEntry(str(relpath), str(reason)))
    done.vectors += int(np.sum(batch["computed"]))


def _as_error(exc: Exception) -> FeatcacheError:
    """A failure on the cluster as one featcache error: one that featcache raised on a worker keeps its type and
    message (Ray passes it on as an object, or only as the text of the actor's death); else the innermost reason."""
    chain = _chain(exc)
    for link in chain:
        if isinstance(link, FeatcacheError):
            return link
    for link in chain:
        found = re.search(r"featcache\.errors\.(\w+): (.+)", str(link))
        if found:
            kind = getattr(featcache_errors, found.group(1), None)
            kind = kind if isinstance(kind, type) and issubclass(kind, FeatcacheError) else FeatcacheError
            return kind(found.group(2).strip())
    said = [link for link in chain if str(link).strip()] or chain
    text = str(said[-1]).strip().splitlines()
    reason = f"{type(said[-1]).__name__}: {text[0][:200] if text else ''}"
    return FeatcacheError(f"the Ray run failed ({reason}); fix the cause and rerun: committed work is kept")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: Ray's ``cause`` and Python's ``__cause__``, outermost first."""
    chain = [exc]
    while len(chain) < 20:
        inner = getattr(chain[-1], "cause", None) or chain[-1].__cause__
        if not isinstance(inner, BaseException) or inner in chain:
            break
        chain.append(inner)
    return chain


class KnownHashes:
    """The ``claims`` of :func:`prepare_one` on an actor: a content is taken unless the cache holds it or this
    actor took it already (two actors may each compute one duplicate; the first shard folded in wins)."""

    def __init__(self, known: np.ndarray):
        self._known, self._taken = known, set()

    def take(self, sha256: str) -> bool:
        key = sha256.encode("ascii")
        at = int(np.searchsorted(self._known, key))
        if (at < len(self._known) and self._known[at] == key) or sha256 in self._taken:
            return False
        self._taken.add(sha256)
        return True


class ShardActor:
    """A Ray Data actor: embeds batches of files and commits each as a shard of the cache."""

    def __init__(self, backbone, config: ExtractConfig, fields: dict, known):
        found = fingerprint_fields(config, backbone)  # hashes the weights file as this node sees it
        if found != fields:
            raise ConfigError(
                f"the backbone on Ray node {os.uname().nodename} differs from the driver's "
                f"({_difference(found, fields)}); give every node the same weights file at the same path"
            )
        self.backbone, self.config = backbone, config
        # TensorFlow, imported later by build(), would otherwise use every core of the node, not the actor's share
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, math.ceil(config.ray_cpus))))
        self.writer = ShardWriter(shards_dir(config.output), fingerprint_of(fields))
        self.claims = KnownHashes(known if isinstance(known, np.ndarray) else require_ray().get(known))
        self.source = open_source(config.data_dir)  # this actor reads the files itself, wherever they are
        self.embed = None

    def __call__(self, batch: dict) -> dict:
        relpaths, shas, reasons, computed = [], [], [], np.zeros(len(batch["relpath"]), dtype=bool)
        good, pixels, bad = [], [], []
        spec = self.config.preprocess
        for i, (relpath, size) in enumerate(zip(batch["relpath"], batch["size"])):
            sha, outcome = prepare_one(self.source, str(relpath), int(size), spec, self.claims)
            relpaths.append(str(relpath))
            shas.append(sha or "")
            reasons.append("" if sha or outcome is KNOWN else str(outcome))
            if sha and isinstance(outcome, np.ndarray):
                good.append(i)
                pixels.append(outcome)
            elif sha and outcome is not KNOWN:
                bad.append((sha, outcome))
        if pixels and self.embed is None:
            self.embed = self.backbone.build()
        if pixels or bad:
            self.writer.write([shas[i] for i in good], embed_pixels(self.embed, pixels), bad)
            computed[good] = True
        return {
            "relpath": np.array(relpaths),
            "sha256": np.array(shas),
            "reason": np.array(reasons),
            "computed": computed,
        }


def _difference(found: dict, expected: dict) -> str:
    keys = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    return ", ".join(f"{k}: {found.get(k)} here, {expected.get(k)} on the driver" for k in keys[:2])
