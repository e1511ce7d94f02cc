"""The message declarations, one module per API family; ``SPECS`` gathers them by key."""

from ledgergate.wire.kafka.schema import Message
from ledgergate.wire.kafka.specs import admin, cluster, data, groups, txn

SPECS: dict[int, tuple[Message, Message]] = {
    **cluster.SPECS,
    **data.SPECS,
    **groups.SPECS,
    **txn.SPECS,
    **admin.SPECS,
}
