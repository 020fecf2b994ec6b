"""Registry authentication building blocks.

Split into pure parts that are easy to test without a network:

* `challenge` parses ``WWW-Authenticate`` headers (RFC 7235) into `Challenge`
  objects, because a registry tells us *how* to authenticate only there;
* `scope` models docker token scopes and caches bearer tokens per scope set,
  so concurrent copies share tokens instead of fetching one per request;
* `credentials` finds usernames, passwords and identity tokens the way the
  docker CLI does (``config.json``, credential helpers), so users need no
  second login just for asyncreg.

The HTTP side (fetching tokens) lives elsewhere and builds on these.
"""
