"""Text formatting shared by the screens and the link replies."""


def amount(minor, currency=""):
    """1234567 -> '12,345.67' (+ ' CNY'): amounts are minor units with two decimals."""
    neg = minor < 0
    if neg:
        minor = -minor
    whole = str(minor // 100)
    parts = []
    while len(whole) > 3:
        parts.insert(0, whole[-3:])
        whole = whole[:-3]
    parts.insert(0, whole)
    s = ",".join(parts) + "." + ("%02d" % (minor % 100))
    if neg:
        s = "-" + s
    if currency:
        s = s + " " + currency
    return s


def parse_amount(text):
    """'12.5' / '12.50' / '1250' (no dot: whole units) -> minor units; ValueError if bad."""
    text = text.strip().replace(",", "")
    if not text:
        raise ValueError("empty amount")
    if "." in text:
        whole, frac = text.split(".", 1)
        if len(frac) > 2 or not frac.isdigit() and frac:
            raise ValueError("at most two decimals")
        frac = (frac + "00")[:2]
    else:
        whole, frac = text, "00"
    if not whole:
        whole = "0"
    if not whole.isdigit():
        raise ValueError("amount must be digits")
    return int(whole) * 100 + int(frac)


def hexs(b):
    import binascii

    return binascii.hexlify(bytes(b)).decode()


def wrap(text, width):
    """Split text into lines of at most width characters (breaking at spaces when possible)."""
    out = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            while len(word) > width:
                if line:
                    out.append(line)
                    line = ""
                out.append(word[:width])
                word = word[width:]
            if not line:
                line = word
            elif len(line) + 1 + len(word) <= width:
                line = line + " " + word
            else:
                out.append(line)
                line = word
        out.append(line)
    return out
