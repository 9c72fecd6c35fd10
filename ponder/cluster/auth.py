"""The engine's only network surface, Ray's own ports: loopback by default, a token always.

``ponder serve`` opens no port of its own; clients reach the engine through the
ports of the Ray it runs on (GCS, raylet, object manager, agents, metrics).

- ``ponder serve`` without ``--address`` starts a Ray on 127.0.0.1 only
  (``use_loopback``: every Ray port listens on loopback) that also requires Ray's
  token (``RAY_AUTH_MODE=token``; the token is made in ``~/.ray/auth_token`` on
  first use), so other users of the machine cannot get in either;
- ``ponder serve --address`` joins a cluster elsewhere, whose ports listen on the
  network, only if that cluster refuses a wrong token (``require_token_auth``);
- a client sends its token (``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``,
  else ``~/.ray/auth_token``), and a missing or wrong one is refused with one
  clear error at once (``check_client``) instead of Ray's "Failed to connect"
  after 20 seconds.

The token check is one cheap GCS call (``GetClusterId``) with the token in its
gRPC metadata; Ray's GCS answers ``UNAUTHENTICATED`` to a missing or wrong token.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys

AUTH_MODE_ENV = "RAY_AUTH_MODE"  # Ray's switch for token authentication
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode, on 127.0.0.1
TOKEN_ENV = "RAY_AUTH_TOKEN"  # a token given directly; beats RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token
PROBE_TIMEOUT_S = 5.0
TOKEN_HELP = ("Ray reads the token from RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, "
              "else ~/.ray/auth_token; use the cluster's token (`ray get-auth-token` on its head "
              "node prints it)")


class TokenRefused(PermissionError):
    """The engine's Ray refused this client's token (missing or wrong)."""


def use_loopback() -> None:
    """Make the Ray this process starts or joins live on 127.0.0.1 only; call before ``ray.init``.

    Ray has no loopback switch (``_node_ip_address="127.0.0.1"`` is turned into the
    machine's network address). Its single-machine mode, the default on macOS and
    Windows, takes 127.0.0.1 as the node's address, and then every Ray port listens on
    loopback only. Ray's child processes inherit the variable; a Ray already imported
    here gets its constant set too. A client must use it as well to join such a Ray.
    """
    os.environ[LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine's loopback interface."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_header(token: str | None) -> dict[str, str]:
    """The gRPC metadata that carries ``token``, or this process's own token if None ({} if none)."""
    if token is not None:
        return {"authorization": f"Bearer {token}"}
    import ray  # Ray: lazy, the client (and so `ponder --help`) imports this module
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    if not ray.is_initialized():
        loader.reset_cache()  # the environment may have changed since Ray first looked
    return dict(loader.get_token_for_http_header(ignore_auth_mode=True))


def probe(address: str, token: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Ask the GCS at ``address`` (``host:port``) whether it lets ``token`` in.

    Args:
        address: the cluster's GCS address.
        token: the token to present; None: this process's own (see ``TOKEN_HELP``),
            "" presents none.

    Returns:
        ``"ok"``, ``"refused"`` (missing or wrong token) or ``"unreachable"``.
    """
    import grpc  # grpc (comes with Ray): lazy, the client (and so `ponder --help`) imports this module
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = () if token == "" else tuple(_token_header(token).items())
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=metadata,
                              timeout=timeout_s)
        except grpc.RpcError as e:
            return "refused" if e.code() == grpc.StatusCode.UNAUTHENTICATED else "unreachable"
    return "ok"


def gcs_address(address: str | None) -> str:
    """``address`` (``host:port``, ``"auto"`` or None for this machine's latest Ray) as ``host:port``.

    Raises:
        ValueError: a Ray Client (``ray://``) address, whose token ponder cannot check.
        ConnectionError: ``"auto"`` and no Ray runs here.
    """
    if address and address.startswith("ray://"):
        raise ValueError(f"address {address!r} is a Ray Client address; give the cluster's GCS "
                         f"address instead (host:port, e.g. 10.0.0.5:6379, or auto): ponder "
                         f"checks the cluster's token authentication through the GCS")
    if address and address != "auto":
        return address  # as given: Ray would turn 127.0.0.1 into this node's other address
    from ray._private.services import canonicalize_bootstrap_address_or_die  # Ray: lazy, as above

    return canonicalize_bootstrap_address_or_die("auto")


def use_token(token: str | None = None) -> None:
    """Make this process send a token to Ray: token mode on, and ``token`` if given.

    Call before ``ray.init``; Ray keeps its mode in a cached config that this refreshes.
    A process already connected keeps the mode it connected with.
    """
    import ray  # Ray: lazy, the client (and so `ponder --help`) imports this module

    if ray.is_initialized():
        return
    os.environ[AUTH_MODE_ENV] = "token"
    if token is not None:
        os.environ[TOKEN_ENV] = token
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def check_client(address: str, token: str | None = None, source: str = "") -> None:
    """Before joining the engine's Ray at ``address``: fail at once if it would refuse us.

    If the cluster requires a token, token mode is turned on here so that Ray sends it.

    Args:
        address: the GCS address (``host:port``).
        token: the token to use (default: this process's, see ``TOKEN_HELP``).
        source: where ``address`` came from, for messages (e.g. the serve.json path).

    Raises:
        TokenRefused: the cluster refused the token, or we have none and it needs one.
        ConnectionError: nothing answers at ``address``.
    """
    where = f"{address}{f' (from {source})' if source else ''}"
    outcome = probe(address, token)
    if outcome == "unreachable":
        raise ConnectionError(f"no Ray answers at {where}; is `ponder serve` running there?")
    if outcome == "refused":
        what = "presented a wrong token" if _token_header(token) else "has no token to give it"
        raise TokenRefused(f"the engine's Ray at {where} requires its auth token and this client "
                           f"{what}; {TOKEN_HELP}")
    if probe(address, token="") == "refused":
        use_token(token)  # the cluster wants the token: make Ray send it on every call


def require_token_auth(address: str, token: str | None = None) -> None:
    """For ``ponder serve --address``: the cluster must refuse a wrong token, and accept ours.

    Raises:
        ValueError: the cluster lets in any client (no token authentication).
        TokenRefused, ConnectionError: as ``check_client``.
    """
    outcome = probe(address, token=secrets.token_hex(16))  # a token nobody has
    if outcome == "ok":
        raise ValueError(f"the Ray cluster at {address} accepts clients without its token; its "
                         f"ports listen on every interface, so ponder serve joins it only with "
                         f"token authentication on: start it with {AUTH_MODE_ENV}=token (see "
                         f"https://docs.ray.io/en/latest/ray-security/token-auth.html)")
    check_client(address, token)
