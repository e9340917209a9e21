"""Which channel a check-in or command report is on: the device's, or a user's (SPEC section 11).

Pure: the service keys user channels in storage by (device, the user this module names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mdm_protocol.checkin import SHARED_IPAD_USER_ID

# On Shared iPad UserShortName tells the users apart; macOS sends a real UserID, User Enrollment (macOS) an
# EnrollmentUserID.
USER_KEYS = ("UserID", "EnrollmentUserID")  # either one marks a message as the user channel's


def channel_user(keys: Mapping[str, Any]) -> str | None:
    """The user whose channel a message with these Apple keys is on; None for the device channel."""
    enrollment_user = keys.get("EnrollmentUserID")
    if isinstance(enrollment_user, str) and enrollment_user:
        return enrollment_user
    user_id = keys.get("UserID")
    if not isinstance(user_id, str) or not user_id:
        return None
    short_name = keys.get("UserShortName")
    if user_id == SHARED_IPAD_USER_ID and isinstance(short_name, str) and short_name:
        return short_name
    return user_id


def is_shared_ipad_user(keys: Mapping[str, Any]) -> bool:
    """The message is a Shared iPad user's: the device it comes from is a Shared iPad."""
    return keys.get("UserID") == SHARED_IPAD_USER_ID
