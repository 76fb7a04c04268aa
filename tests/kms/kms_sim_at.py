"""``kms-sim`` with its Recipient check at one fixed instant (for documents signed for a fixed time).

Usage: ``python tests/kms/kms_sim_at.py serve ...`` with ``CORPUS_RECIPIENT_AT`` (ISO 8601) set.

This is the installed kms-sim (``kms.cli.main``, same arguments, same process model) with one seam pinned:
:class:`kms.recipient.RecipientCheck`, which verifies the document's chain and freshness at the request's
time, is given ``CORPUS_RECIPIENT_AT`` instead. Everything else runs on the real clock and is kms-sim's own:
SigV4 (whose 5-minute skew rule forbids shifting the whole server's clock while boto3 signs with the real
one), the key policy, the wire, the audit log. kms-sim has no option to set the time its Recipient check uses,
and documents signed for a fixed time (deterministic test data) are expired at any other.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

from kms import recipient
from kms.cli import main

AT = datetime.fromisoformat(os.environ["CORPUS_RECIPIENT_AT"].replace("Z", "+00:00"))
_CHECK = recipient.RecipientCheck.__call__


def _at_the_corpus_time(self: recipient.RecipientCheck, data: bytes, at: datetime) -> object:
    return _CHECK(self, data, AT)


setattr(recipient.RecipientCheck, "__call__", _at_the_corpus_time)  # noqa: B010 - a method, on purpose

if __name__ == "__main__":
    sys.exit(main())
