"""Where a notebook works: mode, spec, database, local state — read from its parameters cell.

Every notebook starts with the same parameters (``mode``, ``spec_path``, ``db_url``,
``state_dir``…) and builds a :class:`Target` from them; all later cells take the target.
Nothing passes between notebooks except through files: the spec, the database and the state
directory (local stack state, BU keys written by provisioning, the function package).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import orjson

from aoai_helpers.auth import CredentialMethod
from aoai_helpers.clouds import Cloud, get_cloud
from aoai_helpers.config import db_url as resolve_db_url
from aoai_helpers.config import spec_path as resolve_spec_path
from aoai_helpers.core.masking import mask
from aoai_helpers.db.engine import masked_url
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.notebook_steps.shown import Shown
from aoai_helpers.spec import Spec, load_spec

if TYPE_CHECKING:  # the local package pulls in uvicorn/openai, which Azure mode does not need
    from aoai_helpers.local.stack import StackInfo

__all__ = ["KEYS_FILE", "Mode", "Target"]

Mode = Literal["local", "azure"]
#: BU subscription keys written by provisioning (Azure mode), mode 0600, inside ``state_dir``.
KEYS_FILE = "apim-keys.json"


@dataclass(frozen=True, repr=False)
class Target:
    """A notebook's parameters, checked: the mode, the loaded spec (on its cloud) and paths."""

    mode: Mode
    spec: Spec
    spec_path: Path
    db_url: str
    state_dir: Path
    out_dir: Path
    credential: CredentialMethod = "default"
    gateway_url_override: str | None = None
    #: Send ARM requests through this azure-core transport instead of the network, signed by
    #: no one: an :class:`aoai_helpers.azure.dryrun.DryRunTransport` (tests, dry runs).
    arm_transport: Any = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        mode: str = "local",
        spec_path: str | os.PathLike[str] | None = None,
        db_url: str | None = None,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        out_dir: str | os.PathLike[str] = "out",
        cloud: str | None = None,
        credential: str = "default",
        gateway_url: str | None = None,
        arm_transport: Any = None,
    ) -> Target:
        """Check the parameters and load the spec; a bad value is a :class:`ConfigError`."""
        if mode not in ("local", "azure"):
            raise ConfigError(f'mode must be "local" or "azure", not {mode!r}')
        if credential not in ("default", "cli", "device-code"):
            raise ConfigError(
                f'credential must be "default", "cli" or "device-code", not {credential!r}'
            )
        path = resolve_spec_path(str(spec_path) if spec_path else None)
        spec = load_spec(path).for_cloud(cloud)
        return cls(
            mode=cast(Mode, mode),
            spec=spec,
            spec_path=path,
            db_url=resolve_db_url(db_url, spec, spec_file=path),
            state_dir=Path(state_dir or spec.local.state_dir),
            out_dir=Path(out_dir),
            credential=cast(CredentialMethod, credential),
            gateway_url_override=gateway_url,
            arm_transport=arm_transport,
        )

    @property
    def cloud(self) -> Cloud:
        return get_cloud(self.spec.cloud)

    def azure_credential(self) -> Any:
        """The credential for ARM: azure-identity's (``credential`` parameter), or none needed
        when :attr:`arm_transport` stands in for Azure."""
        if self.arm_transport is not None:
            from aoai_helpers.azure.dryrun import DryRunCredential

            return DryRunCredential()
        from aoai_helpers.auth import credential

        return credential(self.cloud, self.credential)

    def arm(self) -> tuple[Cloud, str, Any, Any]:
        """What every Azure management client here is made from: the cloud, the spec's Azure
        subscription (``ConfigError`` without one), the credential and the ARM transport."""
        if not self.spec.subscription_id:
            raise ConfigError(
                "the spec has no subscription_id (the Azure subscription of its resources)"
            )
        return self.cloud, self.spec.subscription_id, self.azure_credential(), self.arm_transport

    @property
    def keys_file(self) -> Path:
        return self.state_dir / KEYS_FILE

    def gateway_url(self) -> str:
        """The gateway callers use: the running local stack's, or APIM's on the spec's cloud."""
        if self.gateway_url_override:
            return self.gateway_url_override.rstrip("/")
        if self.mode == "local":
            return self.local_info().gateway_url
        return f"https://{self.spec.apim.service_name}.{self.cloud.apim_gateway_suffix}"

    def local_info(self) -> StackInfo:
        """The running local stack (``ConfigError`` if none: run notebook 00 first)."""
        from aoai_helpers.local.control import read_state

        info = read_state(self.state_dir)
        if info is None:
            raise ConfigError(
                f"no local stack is running for {self.state_dir}: run notebook 00 "
                "(or python -m aoai_helpers local up) first"
            )
        return info

    def subscription_keys(self) -> dict[str, str]:
        """Each BU's APIM subscription key: the local stack's, or the file provisioning wrote."""
        if self.mode == "local":
            return dict(self.local_info().keys)
        if not self.keys_file.exists():
            raise ConfigError(
                f"no BU keys at {self.keys_file}: run notebook 01 (provision apply writes them)"
            )
        data = orjson.loads(self.keys_file.read_bytes())
        return {sid: entry["primary_key"] for sid, entry in data["subscriptions"].items()}

    def __repr__(self) -> str:
        return self.show().text()

    def _repr_html_(self) -> str:
        return self.show()._repr_html_()

    def show(self) -> Shown:
        """The parameters as understood (database password masked)."""
        spec = self.spec
        return Shown(
            f"{self.mode} mode on {spec.cloud}",
            "info",
            [
                f"spec: {self.spec_path}",
                f"APIM service: {spec.apim.service_name} (resource group {spec.apim.resource_group})",
                f"business units: {', '.join(s.business_unit for s in spec.subscriptions)}",
                f"capture of streamed calls: {spec.capture.streaming}",
                f"database: {masked_url(self.db_url)}",
                f"local state and keys: {self.state_dir}",
                f"outputs: {self.out_dir}",
            ],
            data=self,
        )


def masked_keys(keys: dict[str, str]) -> dict[str, str]:
    """Subscription id → masked key (``****last4``), for display."""
    return {sid: mask(key) for sid, key in keys.items()}
