"""mdm_protocol: the pure Apple MDM protocol (plists, check-in and command messages, profiles, catalogues).

No Twisted, no IO: both the server and the simulated devices speak through this package.
"""

from .errors import ErrorChainItem, MessageError, PlistError, ProfileError, ProtocolError
from .plist import decode_plist, encode_plist

__all__ = [
    "ErrorChainItem",
    "MessageError",
    "PlistError",
    "ProfileError",
    "ProtocolError",
    "decode_plist",
    "encode_plist",
]
