"""What the server may do on the network: answer its visitors, and nothing else.

Streamlit checks a cross-origin WebSocket request against this machine's addresses, and finds its external
address by asking a web service (``net_util.get_external_ip``): any page on the internet could make the server
call out, and a hospital network may log or block that. The app turns both look-ups off on its first run; the
start-up look-up is avoided by setting ``server.address`` (``.streamlit/config.toml``).
"""

from __future__ import annotations

from streamlit import net_util

__all__ = ["forbid_address_lookups"]


def _no_address() -> None:
    return None


def forbid_address_lookups() -> None:
    """Make Streamlit's origin checks rely on the configured addresses only (no outbound request, no probe).

    Cross-origin requests are then allowed only from ``localhost``, the configured ``server.address`` and
    ``server.corsAllowedOrigins``. Idempotent; costs nothing on later runs.
    """
    net_util.get_external_ip = _no_address
    net_util.get_internal_ip = _no_address
