"""The PIN rule: one definition for the token's keystore and for the host that provisions it.

Small on purpose: the token's keystore stays resident and imports it."""

PIN_MIN = 4
PIN_MAX = 8


def pin_problem(pin):
    """What is wrong with `pin` as a token PIN, or None when the token takes it."""
    if not isinstance(pin, str) or not PIN_MIN <= len(pin) <= PIN_MAX:
        return "PIN must be %d to %d digits" % (PIN_MIN, PIN_MAX)
    for ch in pin:
        if ch not in "0123456789":
            return "PIN must be digits only"
    return None
