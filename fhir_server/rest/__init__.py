"""The framework-free FHIR RESTful API (http.html): a plain request in, a plain response out.

The Flask layer (api/) and batch/transaction Bundles both go through :class:`Router`, so an entry
in a transaction behaves exactly like the same request sent on its own.
"""
