"""Transport security, client credentials and request limits for the orchestrator.

Encrypting updates protects their content; this package protects the service that
carries them. It is split by concern, each module importable on its own:

- :mod:`fedguard.security.tls`: local certificate authority, server certificates,
  uvicorn and httpx TLS settings, and the rule that plain HTTP needs an explicit
  ``--insecure-http``.
- :mod:`fedguard.security.credentials`: enrollment tokens, client credentials and the
  admin token, stored only as hashes (server side).
- :mod:`fedguard.security.agent`: the agent's own credential file and the exchange of
  an enrollment token for it (client side, no database).
- :mod:`fedguard.security.ratelimit`: in-memory token buckets keyed by client_id.
- :mod:`fedguard.security.limits`: request body caps derived from the federation.
- :mod:`fedguard.security.deps`: FastAPI dependencies (``require_client``,
  ``require_admin``) and the wiring that installs all of the above on an app.
- :mod:`fedguard.security.api`: the enrollment and admin HTTP routes.
- :mod:`fedguard.security.tokens`: secret formats and hashing, shared by the modules
  above; secret files are written through :mod:`fedguard.files`.

Nothing here is imported by :mod:`fedguard.crypto` or :mod:`fedguard.learning`.
"""
