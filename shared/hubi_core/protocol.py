"""Serial link protocol constants: the ONE table shared by the token firmware and the host.

Both ends import this module unchanged (MicroPython and CPython). docs/link.md explains every
number; change a wire constant only together with a new protocol version.

Message type byte
-----------------
====================  ==========================================================
0x00                  never valid
0x01 .. 0x1F          link layer requests (this module: HELLO, PING, bulk, ...)
0x20 .. 0x6F          APPLICATION requests (token firmware: PROVISION_*, PAY_*, ...)
0x70 .. 0x7B          test / diagnostics requests (tests/peers, factory tests)
0x7C .. 0x7F          reserved: never requests (their reply slots hold the specials)
bit 0x80 (REPLY)      set on every frame a server sends back: the successful reply
                      to request T has type T | REPLY; 0xFD BULK_REPLY, 0xFE WAIT
                      and 0xFF ERROR may answer any request
====================  ==========================================================
"""

# --- wire format (docs/link.md, "Frame layout") ------------------------------------------
SYNC = b"\xa5\x96"  # two sync bytes that start every frame
SYNC0 = 0xA5
SYNC1 = 0x96
HEADER_LEN = 12  # sync(2) ver(1) type(1) seq(2) len(2) hcrc(4)
CRC_LEN = 4  # trailing frame CRC
OVERHEAD = HEADER_LEN + CRC_LEN  # 16 bytes per frame
MAX_PAYLOAD = 1024  # largest payload of one frame (LEN field); decoders may be configured lower
MIN_PAYLOAD = 64  # smallest max_payload an endpoint may announce
MAX_MESSAGE = 256 * 1024  # largest logical message (several frames through the bulk messages)

# --- protocol versions ----------------------------------------------------------------------
PROTOCOL_VERSION = 1  # the version this code speaks by default
SUPPORTED_VERSIONS = (1,)  # every version this code can speak (HELLO picks the highest common)

# --- session defaults -----------------------------------------------------------------------
DEFAULT_TIMEOUT_MS = 1000  # per attempt, for one request
DEFAULT_RETRIES = 2  # extra attempts after the first
FRAME_TIMEOUT_MS = 200  # a started frame that stays silent this long is reported truncated
WAIT_INTERVAL_MS = 250  # a busy server sends WAIT at least this often

# --- message types --------------------------------------------------------------------------
REPLY = 0x80  # bit set on every reply-class frame

# link layer requests (0x01..0x1F); the reply to each is TYPE | REPLY
HELLO = 0x01  # u8 n, n x u8 versions, u16 max_payload, u32 max_message, name (utf-8)
PING = 0x02  # any payload; the reply (PONG) echoes it
STATS = 0x03  # empty; the reply carries STATS_FIELDS as u32 big-endian each
BULK_BEGIN = 0x08  # u8 target type, u8 flags (0), u32 total length, u32 CRC-32 of the message
BULK_DATA = 0x09  # u32 offset, data; the reply carries u32 bytes received so far
BULK_END = 0x0A  # empty; the reply is the target handler's reply (or BULK_REPLY / ERROR)
BULK_READ = 0x0B  # u32 offset, u16 max bytes; the reply carries u32 offset, data

HELLO_REPLY = HELLO | REPLY  # u8 version, u16 max_payload, u32 max_message, name (utf-8)
PONG = PING | REPLY
STATS_REPLY = STATS | REPLY
BULK_BEGIN_REPLY = BULK_BEGIN | REPLY  # u32 total length accepted
BULK_DATA_REPLY = BULK_DATA | REPLY  # u32 bytes received so far
BULK_READ_REPLY = BULK_READ | REPLY  # u32 offset, data

# reply-only specials (may answer any request)
BULK_REPLY = 0xFD  # the reply is large: u8 reply type, u32 total length, u32 CRC-32; pull it
WAIT = 0xFE  # "still working on your request": u16 suggested extra wait in ms
ERROR = 0xFF  # u16 error code, text (utf-8)

LINK_FIRST = 0x01
LINK_LAST = 0x1F
# ==== APPLICATION MESSAGES: 0x20 .. 0x6F ====================================================
# The token firmware defines its requests here (replies are TYPE | REPLY), e.g.
#   PROVISION_BEGIN = 0x20, PAY_REQUEST = 0x28, NOTE_GET = 0x29, ...
# and adds each to TYPE_NAMES below so that errors and logs show the name.
APP_FIRST = 0x20
APP_LAST = 0x6F
# token firmware (docs/token.md, "Link messages"; payload layouts in hubi_core.tokenmsg)
GET_INFO = 0x20  # empty -> JSON: state, board, account, serial, allowance, transport key
SET_TIME = 0x21  # u32 Unix time -> empty
PROVISION_FILE = 0x22  # u8 name_len, name, bytes (streamed to flash) -> SHA-256 of the file
PROVISION_COMMIT = 0x23  # ECIES blob sealed to the transport key -> JSON info
LOAD_ALLOWANCE = 0x24  # OfflineAllowance -> JSON allowance
PAY_REQUEST = 0x28  # Request -> u8 status + note (confirmed on the device) or JSON summary
PAY_CONFIRM = 0x29  # headless: PIN digits -> note
PAY_CANCEL = 0x2A  # headless: drop the pending request -> empty
NOTE_GET = 0x2B  # empty (last) or varint serial -> note
NOTE_LIST = 0x2C  # empty -> JSON list of the notes kept
LOAD_NOTICE = 0x30  # BalanceNotice or Receipt -> JSON summary
SHOW_BALANCE = 0x31  # empty (PIN on the device) or PIN digits (headless) -> JSON balance
CHANGE_PIN = 0x38  # headless: old PIN, 0x00, new PIN; screen boards ask on the device -> empty
WIPE = 0x39  # confirmed on the device, or PIN digits (headless) -> empty
# ==== end of application messages ===========================================================
TEST_FIRST = 0x70  # 0x70..0x7B: test and diagnostics requests (tests/peers/, factory test)
TEST_LAST = 0x7B

STATS_FIELDS = (
    "rx_frames",
    "tx_frames",
    "skipped_bytes",
    "bad_headers",
    "bad_crcs",
    "oversize",
    "truncated",
    "duplicates",
    "errors_sent",
)

TYPE_NAMES = {
    HELLO: "HELLO",
    PING: "PING",
    STATS: "STATS",
    BULK_BEGIN: "BULK_BEGIN",
    BULK_DATA: "BULK_DATA",
    BULK_END: "BULK_END",
    BULK_READ: "BULK_READ",
    HELLO_REPLY: "HELLO_REPLY",
    PONG: "PONG",
    STATS_REPLY: "STATS_REPLY",
    BULK_BEGIN_REPLY: "BULK_BEGIN_REPLY",
    BULK_DATA_REPLY: "BULK_DATA_REPLY",
    BULK_READ_REPLY: "BULK_READ_REPLY",
    BULK_REPLY: "BULK_REPLY",
    WAIT: "WAIT",
    ERROR: "ERROR",
    # application types: add here
    GET_INFO: "GET_INFO",
    SET_TIME: "SET_TIME",
    PROVISION_FILE: "PROVISION_FILE",
    PROVISION_COMMIT: "PROVISION_COMMIT",
    LOAD_ALLOWANCE: "LOAD_ALLOWANCE",
    PAY_REQUEST: "PAY_REQUEST",
    PAY_CONFIRM: "PAY_CONFIRM",
    PAY_CANCEL: "PAY_CANCEL",
    NOTE_GET: "NOTE_GET",
    NOTE_LIST: "NOTE_LIST",
    LOAD_NOTICE: "LOAD_NOTICE",
    SHOW_BALANCE: "SHOW_BALANCE",
    CHANGE_PIN: "CHANGE_PIN",
    WIPE: "WIPE",
}

# --- error codes (u16 in ERROR replies) -----------------------------------------------------
ERR_UNKNOWN_TYPE = 0x0001  # no handler for this request type
ERR_BAD_CRC = 0x0002  # a frame arrived with a valid header but a wrong frame CRC
ERR_TRUNCATED = 0x0003  # a frame stopped before its LEN bytes arrived (frame timeout)
ERR_OVERSIZE = 0x0004  # a frame header announced more than the receiver's max_payload
ERR_BAD_VERSION = 0x0005  # the frame's version byte is not one the receiver speaks
ERR_NO_COMMON_VERSION = 0x0006  # HELLO: no version both sides speak
ERR_BAD_PAYLOAD = 0x0007  # the request payload is malformed
ERR_TOO_LARGE = 0x0008  # the message is larger than the receiver accepts or can buffer
ERR_BULK_STATE = 0x0009  # bulk message out of order (no transfer, wrong offset, short)
ERR_BULK_CRC = 0x000A  # the reassembled message does not match its CRC-32
ERR_BUSY = 0x000B  # the receiver cannot take this request now
ERR_INTERNAL = 0x000C  # the handler failed unexpectedly
ERR_NOT_A_REQUEST = 0x000D  # a reply-class type (bit 0x80) or type 0 sent as a request
# ==== APPLICATION ERROR CODES: 0x0100 .. 0x7FFF =============================================
# e.g. ERR_PIN_WRONG = 0x0101, ERR_ALLOWANCE = 0x0102, ... (add them to ERROR_NAMES too)
ERR_APP_FIRST = 0x0100
ERR_APP_LAST = 0x7FFF
# token firmware
ERR_STATE = 0x0101  # not possible in this state (blank / provisioned / no request pending)
ERR_PIN_WRONG = 0x0102  # wrong PIN; the text says how many tries are left
ERR_WIPED = 0x0103  # the tenth wrong PIN wiped the keys
ERR_ALLOWANCE = 0x0104  # over, expired or without an offline allowance
ERR_VERIFY = 0x0105  # a request, notice or provisioning object failed offline verification
ERR_CANCELLED = 0x0106  # the user declined on the device
ERR_PROVISION = 0x0107  # provisioning bundle rejected (names the reason)
ERR_CODEC = 0x0108  # bytes that are not a valid hubi object
ERR_NOT_FOUND = 0x0109  # no such note / notice
ERR_EXPIRED = 0x010A  # the request has expired
ERR_STORAGE = 0x010B  # flash full or unwritable
# ==== end of application error codes ========================================================
# 0x8000 .. 0xFFFF: test and vendor codes

# Codes that mean "your frame did not arrive intact": the client retransmits the request.
FRAMING_ERRORS = (ERR_BAD_CRC, ERR_TRUNCATED, ERR_OVERSIZE)

ERROR_NAMES = {
    ERR_UNKNOWN_TYPE: "UNKNOWN_TYPE",
    ERR_BAD_CRC: "BAD_CRC",
    ERR_TRUNCATED: "TRUNCATED",
    ERR_OVERSIZE: "OVERSIZE",
    ERR_BAD_VERSION: "BAD_VERSION",
    ERR_NO_COMMON_VERSION: "NO_COMMON_VERSION",
    ERR_BAD_PAYLOAD: "BAD_PAYLOAD",
    ERR_TOO_LARGE: "TOO_LARGE",
    ERR_BULK_STATE: "BULK_STATE",
    ERR_BULK_CRC: "BULK_CRC",
    ERR_BUSY: "BUSY",
    ERR_INTERNAL: "INTERNAL",
    ERR_NOT_A_REQUEST: "NOT_A_REQUEST",
    # application error codes: add here
    ERR_STATE: "STATE",
    ERR_PIN_WRONG: "PIN_WRONG",
    ERR_WIPED: "WIPED",
    ERR_ALLOWANCE: "ALLOWANCE",
    ERR_VERIFY: "VERIFY",
    ERR_CANCELLED: "CANCELLED",
    ERR_PROVISION: "PROVISION",
    ERR_CODEC: "CODEC",
    ERR_NOT_FOUND: "NOT_FOUND",
    ERR_EXPIRED: "EXPIRED",
    ERR_STORAGE: "STORAGE",
}


def type_name(t):
    """'PING (0x02)' for known types, '0x21' otherwise."""
    name = TYPE_NAMES.get(t)
    if name is None and t & REPLY and (t & 0x7F) in TYPE_NAMES:
        name = TYPE_NAMES[t & 0x7F] + "|REPLY"
    if name is None:
        return "0x%02x" % t
    return "%s (0x%02x)" % (name, t)


def error_name(code):
    """'BAD_CRC (0x0002)' for known codes, '0x1234' otherwise."""
    name = ERROR_NAMES.get(code)
    if name is None:
        return "0x%04x" % code
    return "%s (0x%04x)" % (name, code)


def is_request_type(t):
    """True for a type a client may send as a request (link, application or test range)."""
    return LINK_FIRST <= t <= TEST_LAST
