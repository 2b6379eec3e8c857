"""A HubSpot-CRM-v3-shaped contacts API backed by SQLite, for `make dev` and the integration tests.

The activation stage talks to this server with the same client it uses for HubSpot; only the base URL and token
differ. It implements what that client needs, in HubSpot's request/response shapes:

- ``POST /crm/v3/objects/contacts/batch/upsert``: at most 100 inputs, applied in one SQLite transaction;
- ``GET /crm/v3/objects/contacts?limit=&after=``: cursor paging in contact-id order;
- ``GET /crm/v3/objects/contacts/{id}`` and ``.../{value}?idProperty=<property>``;
- ``POST .../batch/read`` (``idProperty`` + ``inputs: [{id}]``): the contacts found; 207 with ``errors`` for the rest;
- ``POST .../batch/archive`` (``inputs: [{id}]``, object ids): archive (here: delete) them; 204, ids not found ignored;
- ``GET /_devstack/stats`` (not HubSpot): counts to assert on in tests and benchmarks;
- ``GET``/``PUT /_devstack/faults`` (not HubSpot): read or replace the fault injection (`FaultConfig`) at runtime;
- ``GET /healthz``: readiness probe, never needs the token.

Deliberate simplifications, so tests do not rely on them by accident:

- Property values are stored as strings like HubSpot does (``true``/``false`` for booleans, ``str()`` of numbers);
  JSON ``null`` is stored as ``null`` and clears the value. Objects/arrays are rejected.
- Any property becomes a *unique id property* the first time an upsert uses it as ``idProperty`` (HubSpot declares
  them up front; ``email`` is registered from the start). Registering one indexes the existing contacts, the
  oldest contact winning if several already share a value. From then on a second contact cannot take the same
  value (409 ``CONFLICT``, whole batch rolled back). Values are matched exactly (HubSpot lower-cases emails).
  ``GET .../{value}?idProperty=`` with any other property scans and returns the oldest match (HubSpot: 400).
- The same ``(idProperty, id)`` twice in one batch is rejected (400), as HubSpot does.
- ``email`` must look like an address (``INVALID_EMAIL``). Like HubSpot, one invalid input fails the whole batch
  with a 400 whose ``errors`` name each bad input (``in: inputs[3].properties.email``): a client drops those
  records and resends the rest.

The modules, by concern:

- `devstack.crm.contacts`: the contact shapes, request-body checks and limits;
- `devstack.crm.errors`: HubSpot-shaped errors (`CrmError`, `error_response`);
- `devstack.crm.store`: the SQLite storage (`ContactStore`);
- `devstack.crm.idempotency`: ``Idempotency-Key`` on batch upsert, applied once and replayed;
- `devstack.crm.faults`: switchable faults (`FaultConfig`): 429 + ``Retry-After``, 503, slow, dropped connections,
  500 after applying;
- `devstack.crm.api`: `create_app`, the routes and bearer-token auth;
- `devstack.crm.cli`: `main`, the command line (``python -m devstack.crm``).
"""

from devstack.crm.api import create_app
from devstack.crm.cli import main
from devstack.crm.faults import FaultConfig
from devstack.crm.store import ContactStore

__all__ = ["ContactStore", "FaultConfig", "create_app", "main"]
