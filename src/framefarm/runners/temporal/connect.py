"""Which Temporal server and namespace, from flags or the SDK's standard configuration
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS settings, the profile file), and
where a run can be seen in Temporal's web UI."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime, TelemetryConfig

from framefarm import config
from framefarm.errors import UserError


@dataclass(frozen=True, kw_only=True)
class TemporalTarget:
    """A Temporal server to connect to; an empty address means none was given."""

    address: str = ""
    namespace: str = "default"
    ui: str = ""
    """The server's web UI (empty: guessed from the address)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The rest of the SDK's connect configuration: TLS, API key, gRPC metadata."""


def resolve_target(*, address: str | None = None, namespace: str | None = None,
                   ui: str | None = None, environ: Mapping[str, str] | None = None) -> TemporalTarget:
    """Flags beat the SDK's environment configuration (TEMPORAL_ADDRESS …), which beats none."""
    try:
        loaded = dict(ClientConfig.load_client_connect_config(override_env_vars=environ))
    except Exception as exc:  # a malformed profile file or variable
        raise UserError(f"the Temporal client configuration cannot be read: {exc}: fix "
                        f"{config.TEMPORAL_ADDRESS} and friends or the profile file") from None
    found_address = str(loaded.pop("target_host", "") or "")
    found_namespace = str(loaded.pop("namespace", "") or "")
    return TemporalTarget(address=(address or found_address).strip(),
                          namespace=(namespace or found_namespace or "default").strip(),
                          ui=str(config.resolve(ui, config.TEMPORAL_UI, "", environ) or ""),
                          options=loaded)


T = TypeVar("T")


def run_with_runtime(main: Callable[[Runtime], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run(main(runtime))` with a Temporal runtime of its own, dropped before returning.

    The SDK's default runtime lives until the interpreter exits, and its threads then crash the
    exit about one time in five ("PyGILState_Release: thread state … must be current",
    temporalio/sdk-python#300); a runtime dropped while Python is whole stops them cleanly.
    """
    runtime = Runtime(telemetry=TelemetryConfig())
    try:
        return asyncio.run(main(runtime))
    finally:
        del runtime
        gc.collect()


async def connect(target: TemporalTarget, *, runtime: Runtime,
                  interceptors: Sequence[Interceptor] = ()) -> Client:
    """A client of `target`; an unreachable server is a UserError naming it."""
    try:
        return await Client.connect(target.address, namespace=target.namespace,
                                    interceptors=interceptors, runtime=runtime, **target.options)
    except RuntimeError as exc:
        raise UserError(f"cannot reach the Temporal server at {target.address}: "
                        f"{str(exc).splitlines()[0][:300]}; check --temporal-address (or "
                        f"{config.TEMPORAL_ADDRESS}) and that the server is running") from None


def ui_url(target: TemporalTarget, workflow_id: str) -> str:
    """Where a workflow can be seen in Temporal's web UI.

    An explicit UI (--temporal-ui, FRAMEFARM_TEMPORAL_UI) is used as given; Temporal Cloud's is
    cloud.temporal.io; otherwise the dev server's convention, the gRPC port + 1000 on the same
    host (7233 -> 8233).
    """
    path = f"/namespaces/{quote(target.namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"
    if target.ui:
        return target.ui.rstrip("/") + path
    host, _, port = target.address.rpartition(":")
    if host.endswith(".tmprl.cloud"):
        return "https://cloud.temporal.io" + path
    ui_port = int(port) + 1000 if port.isdigit() else 8233
    return f"http://{host or target.address}:{ui_port}{path}"
