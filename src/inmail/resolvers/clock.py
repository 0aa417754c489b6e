"""The `advanceClock` mutation: admin only, and only while the service's clock is manual."""

from __future__ import annotations

from inmail.domain.access import ReadRefused
from inmail.domain.errors import DomainError
from inmail.resolvers.context import ResolverInfo, ctx
from inmail.schema.errors import UserError, refused
from inmail.schema.inputs import AdvanceClockInput
from inmail.schema.payloads import AdvanceClockPayload
from inmail.services import manual_clock


async def advance_clock(info: ResolverInfo, input: AdvanceClockInput) -> AdvanceClockPayload:
    c = ctx(info)
    try:
        now = await c.run(
            manual_clock.advance_clock_as,
            c.viewer(),
            days=input.days,
            hours=input.hours,
            batch_size=c.settings.scheduler_batch,
            deliveries=c.container.webhooks,
        )
    except ReadRefused as refusal:
        raise refused(refusal) from None
    except DomainError as error:
        return AdvanceClockPayload(now=c.reads.now(), errors=[UserError.from_domain(error)])
    c.reads.clear()
    return AdvanceClockPayload(now=now)
