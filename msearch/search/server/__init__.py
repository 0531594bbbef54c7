"""`msearch serve`: the HTTP API and the offline web page (msearch.search.server.app)."""

from msearch.search.server.app import LOOPBACK_NAMES, check_bind, create_app, is_loopback, one_thread_per_request

__all__ = ["LOOPBACK_NAMES", "check_bind", "create_app", "is_loopback", "one_thread_per_request"]
