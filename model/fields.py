"""Building blocks every operator-edited file shares: strict models, names, kilowatts.

One place, so a site file, a policy file, the MQTT block and the prices block all refuse an
unknown key and accept the same names the same way.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

SITE_CIRCUIT = "site"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"  # safe as a Prometheus label and an MQTT topic level

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Kilowatts = Annotated[float, Field(gt=0, le=10_000_000)]


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not be ignored); values never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def one_or_many(value: Any) -> Any:
    """For a ``mode="before"`` validator: a single value where a list is expected."""
    return [value] if isinstance(value, str) else value
