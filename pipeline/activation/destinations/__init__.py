"""Destination types: what a sync can send to, one module in this package each, registering itself.

A destination type tells the rest of activation everything it needs to know about it:

- `name`: the value of `destination:` in syncs.yaml; `options`: the sync keys it accepts beyond the common ones,
  each with its check (webhook: `path`). syncs.yaml is validated against the registered types.
- `resource_key` and `resource(settings)`: the Dagster resource that reaches it (an `HttpDestinationResource`),
  built from settings with secrets left as `dg.EnvVar`s; the code location provides one per registered type.
- `asset_key(spec)` and `describe(spec, resource)`: the object a sync writes there, an external asset downstream of
  the sync (`external_spec`). One sync per object: two syncs with one asset key are a load error.
- `open(spec, resource, client, sender)`: the object that shapes the sync's batches in SQL at plan time and
  delivers them at send time (`outbox.Destination`); without a client it only shapes.

A new destination type is a new module here calling `register(...)` at import time, plus its settings in
`core/settings.py` if it has any. The package imports every module in it on the first lookup rather than on its own
import, so a destination module may import `syncs`, `outbox` or `shape` freely (they import this package).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import dagster as dg
import httpx

from ...core.external import destination_spec
from ...core.settings import Settings
from ...core.transport import RetryingSender, RetryPolicy

if TYPE_CHECKING:
    from ..outbox import Destination
    from ..syncs import SyncSpec

#: A destination type's own sync key: its value in syncs.yaml (None when absent) -> what is wrong with it, or None.
#: The message follows the key: "must start with /", "is required: ...".
OptionCheck = Callable[[Any], str | None]


class HttpDestinationResource(dg.ConfigurableResource):
    """What every destination's resource shares: where it is, timeouts, retries, batch size and how many batches
    are in flight. Lives with the destination types (core has no use for it); each type subclasses it with its
    credentials and options."""

    base_url: str
    timeout_seconds: float = 30.0
    max_attempts: int = 6
    backoff_base_seconds: float = 0.5
    #: records per batch
    batch_size: int = 100
    #: batches sent at once (each on its own pooled keep-alive connection); 1 sends them one after another
    max_concurrency: int = 4

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, base_delay_seconds=self.backoff_base_seconds)

    def headers(self) -> dict[str, str]:
        """Headers on every request (credentials)."""
        return {}

    def client(self) -> httpx.Client:
        """One pooled client per sync run (keep-alive connections, enough for the concurrency), with a timeout on
        every request. httpx clients are thread-safe."""
        limits = httpx.Limits(
            max_connections=max(1, self.max_concurrency), max_keepalive_connections=self.max_concurrency
        )
        return httpx.Client(base_url=self.base_url, headers=self.headers(), timeout=self.timeout_seconds, limits=limits)


R = TypeVar("R", bound=HttpDestinationResource)


class DestinationType(ABC, Generic[R]):
    """One kind of destination (see the module's docstring), reached through a resource of type R; a module
    registers one instance."""

    #: the value of `destination:` in syncs.yaml
    name: ClassVar[str]
    #: the key of its resource in the code location (run config and tests name it)
    resource_key: ClassVar[str]
    #: sync keys it accepts beyond the common ones, each with its check
    options: ClassVar[Mapping[str, OptionCheck]] = {}

    @abstractmethod
    def resource(self, settings: Settings) -> R:
        """Its resource, from settings (secrets as `dg.EnvVar`s, resolved inside the run)."""

    @abstractmethod
    def asset_key(self, spec: SyncSpec) -> dg.AssetKey:
        """The object the sync writes, as an asset key (one sync per key)."""

    @abstractmethod
    def describe(self, spec: SyncSpec, resource: R) -> tuple[str, str]:
        """The object's description and URL, for its external asset."""

    @abstractmethod
    def open(
        self,
        spec: SyncSpec,
        resource: R,
        client: httpx.Client | None = None,
        sender: RetryingSender | None = None,
    ) -> Destination:
        """What shapes and sends the sync's batches; without a client it only shapes them (what the plan needs)."""

    def external_spec(self, spec: SyncSpec, resource: R) -> dg.AssetSpec:
        """The object as an external asset, written only by the sync's asset."""
        description, url = self.describe(spec, resource)
        return destination_spec(self.asset_key(spec), dg.AssetKey([spec.name]), description, url)


class UnknownDestinationError(LookupError):
    pass


_REGISTRY: dict[str, DestinationType[Any]] = {}


def register(kind: DestinationType[R]) -> DestinationType[R]:
    """Add a destination type (a destination module calls this when imported); a name taken by another type is an
    error naming both."""
    taken = _REGISTRY.get(kind.name)
    if taken is not None and taken is not kind:
        raise ValueError(
            f"destination type {kind.name!r} is registered twice: by {type(taken).__module__}.{type(taken).__name__}"
            f" and {type(kind).__module__}.{type(kind).__name__}; rename one"
        )
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a destination type (tests that register one of their own)."""
    _REGISTRY.pop(name, None)


@functools.cache
def _discover() -> None:
    """Import every module of this package once: each registers its destination type."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def registered() -> dict[str, DestinationType[Any]]:
    """Every destination type, by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> DestinationType[Any]:
    """The destination type called `name`; an unknown name raises, listing the registered ones."""
    kinds = registered()
    if name not in kinds:
        raise UnknownDestinationError(f"destination {name!r} is not one of {', '.join(kinds)}")
    return kinds[name]


def resources(settings: Settings) -> dict[str, HttpDestinationResource]:
    """Each registered type's resource, under its key: what the code location provides for the syncs."""
    return {kind.resource_key: kind.resource(settings) for kind in registered().values()}
