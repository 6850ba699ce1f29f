"""Offline verification in two steps, so that the decoder and the curve arithmetic never share
the heap (a request, a Receipt, a BalanceNotice; firmware core.pay and core.notes).

1. ``plan(obj)`` while hubi_core.codec is loaded: the exact bytes each signature covers
   (codec.field_message) are hashed, and what step 2 needs is kept as plain values (the
   signer's bank, the account and separating key of a carried template, digests, signatures).
   The caller drops the decoded object and releases the codec.
2. ``check(w, plan, matrices)``: the bank key cached at provisioning (core.trust), the account
   key from the bank's public matrix (read from flash by offset), then ECDSA on the digests
   (suite.verify_digest). The same checks in the same order, with the same messages, as
   hubi_core.verify.verify_object; returns its first failure (field, reason) or None.

Imported for one step and released after it (core/__init__.py).
"""

import gc
import hashlib


def plan(obj):
    """Step 1 (codec loaded): (pre, bank, account, separating key, seal, sigs)."""
    from hubi_core import codec, ids

    sha = hashlib.sha256
    sigs = []
    for name in codec.signed_fields(obj.kind):
        if name in obj.values:
            sigs.append((name, sha(codec.field_message(obj, name)).digest(), obj.sigs[name]))
    if obj.kind not in (codec.REQUEST, codec.RECEIPT):
        return (None, obj.signer, None, None, None, sigs)  # a bank's object: its own key
    # an account's object: the key its bank sealed in the template it carries
    tpl = obj["template"]
    bank = tpl.signer
    account = tpl["account"]
    pre = None  # verify_object's checks before any signature (reported after the trust files)
    if account != obj.signer:
        pre = ("template", "template is for %s, not %s" % (account, obj.signer))
    elif ids.bank_of(account) != bank:
        pre = ("template", "account %s is not an account of bank %s" % (account, bank))
    seal = (sha(codec.field_message(tpl, "seal")).digest(), tpl.sigs["seal"])
    return (pre, bank, account, tpl["key"], seal, sigs)


def check(w, plan, matrices=True):
    """Step 2 (codec released): the first failure (field, reason), or None if genuine.

    `matrices`: load and check every bank's matrix file first (core.trust.load_trust does the
    same for the host-side verifier); a bank's own object needs none."""
    from core.trust import keys
    from core.trust import matrices as load_matrices
    from hubi_core import suite

    pre, bank, account, sep, seal, sigs = plan
    mats = load_matrices(w) if matrices else None
    if pre is not None:
        return pre
    key = None
    for b, k, _ in keys(w):
        if b == bank:
            key = k
    if key is None:
        return ("bank", "bank %s is not in the consortium" % bank)
    if seal is not None:
        if not suite.verify_digest(key, seal[0], seal[1]):
            return ("template", "bank %s's seal does not verify" % bank)
        if mats is None or bank not in mats:
            return ("template", "no public matrix for bank %s" % bank)
        key = mats[bank].public_key(account, sep)
    del mats
    gc.collect()
    for name, digest, sig in sigs:
        if suite.is_high_s(sig):
            return (name, "high-S signature (not the canonical encoding)")
        if not suite.verify_digest(key, digest, sig):
            return (name, "signature does not verify")
    return None
