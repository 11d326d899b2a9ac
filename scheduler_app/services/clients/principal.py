"""Who is calling, and what their role lets them see."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    SUBMITTER = "submitter"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return [Role.SUBMITTER, Role.OPERATOR, Role.ADMIN].index(self)


@dataclass(frozen=True)
class Principal:
    id: uuid.UUID
    role: Role

    @property
    def sees_everything(self) -> bool:
        """Operators and admins see every owner's tasks; submitters only their own."""
        return self.role.rank >= Role.OPERATOR.rank

    def at_least(self, role: Role) -> bool:
        return self.role.rank >= role.rank
