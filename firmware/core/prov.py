"""Provisioning and offline allowances, imported for one request (core/__init__.py).

Provisioning (``provision``): the bank uploads the public trust files into stage/ (FileSink,
streamed: a 33.8 KB matrix never sits in the heap), then one ECIES bundle sealed to the
transport key. Every check passes before anything is installed; the keystore is written last
(the commit point). See docs/token.md "Keystore and provisioning".
"""

import gc
import hashlib

from core.wallet import ALLOW, TPL, Counter, WalletError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# hubi_core.protocol's numbers (tests/test_token_core.py checks them)
_ERR_ALLOWANCE = const(0x0104)
_ERR_BAD_PAYLOAD = const(0x0007)
_ERR_CODEC = const(0x0108)
_ERR_PROVISION = const(0x0107)
_ERR_STATE = const(0x0101)
_ERR_VERIFY = const(0x0105)


class FileSink:
    """Streams a PROVISION_FILE upload into stage/: header (name) first, then the bytes."""

    def __init__(self, wallet, total):
        self.wallet = wallet
        self.total = total
        self.name = None
        self.f = None
        self.h = hashlib.sha256()
        self.n = 0
        self.pending = b""

    def write(self, chunk):
        if self.name is None:
            from hubi_core import tokenmsg

            data = self.pending + bytes(chunk)
            if not data:
                return
            k = data[0]
            if len(data) < 1 + k:
                self.pending = data
                return
            try:
                name = bytes(data[1 : 1 + k]).decode()
            except UnicodeError:
                raise WalletError(
                    _ERR_BAD_PAYLOAD, "PROVISION_FILE: the file name is not UTF-8"
                ) from None
            self.name = tokenmsg.check_file_name(name)
            self.pending = b""
            self.f = self.wallet.storage.open("stage/" + self.name + ".part", "wb")
            chunk = data[1 + k :]
            if not chunk:
                return
        self.h.update(chunk)
        self.n += len(chunk)
        self.f.write(chunk)

    def finish(self):
        if self.name is None:
            raise WalletError(_ERR_BAD_PAYLOAD, "PROVISION_FILE: no file name")
        self.f.close()
        self.f = None
        st = self.wallet.storage
        st.rename("stage/" + self.name + ".part", "stage/" + self.name)
        return self.h.digest()


def stage_sink(w, total):
    if w.provisioned:
        raise WalletError(_ERR_STATE, "token already provisioned: wipe it first")
    return FileSink(w, total)


def _staged_trust(w, cons):
    """Trust over the consortium file and the staged matrices (digests checked by Trust)."""
    from hubi_core.cpk import PublicMatrix
    from hubi_core.errors import VerifyError
    from hubi_core.verify import Trust

    mats = {}
    for b in cons.bank_ids():
        name = "stage/" + b + ".pub"
        if not w.storage.exists(name):
            raise WalletError(_ERR_PROVISION, "public matrix of bank %s missing (%s)" % (b, name))
        mats[b] = PublicMatrix.open(w.storage.path(name))
    try:
        return Trust(cons, mats)
    except VerifyError as e:
        raise WalletError(_ERR_PROVISION, str(e)) from None


def _trim(trust):
    """Drop decoded matrix points: a 96 KB heap has no room for a cache of them."""
    for m in trust.matrices.values():
        m._points.clear()
        m._cache.clear()
    gc.collect()


def provision(w, blob):
    """Check and install a sealed provisioning bundle (see hubi_core.tokenmsg)."""
    from core.trust import KEYS, keys_record
    from hubi_core import codec, ct, ecies, suite, tokenmsg
    from hubi_core.consortium import Consortium
    from hubi_core.errors import HubiError
    from hubi_core.verify import template_key

    if w.provisioned:
        raise WalletError(_ERR_STATE, "token already provisioned: wipe it first")
    try:
        plain = ecies.open_sealed(w.ks.transport_private(), bytes(blob), tokenmsg.PROVISION_INFO)
    except ValueError as e:
        raise WalletError(_ERR_PROVISION, "cannot open the provisioning bundle: %s" % e) from None
    try:
        b = tokenmsg.decode_bundle(plain)
    except HubiError as e:
        raise WalletError(_ERR_PROVISION, str(e)) from None
    del plain
    if "time" in b and b["time"] < w.clock.EPOCH_OK:  # as SET_TIME: the clock would read as
        raise WalletError(  # never set, and the allowance and requests as never expiring
            _ERR_PROVISION,
            "provisioning bundle: time %d is before %d (2020): set the host's clock"
            % (b["time"], w.clock.EPOCH_OK),
        )
    cons_raw = w.storage.read("stage/consortium.json")
    if cons_raw is None:
        raise WalletError(_ERR_PROVISION, "consortium.json was not uploaded (PROVISION_FILE)")
    if not ct.equal(hashlib.sha256(cons_raw).digest(), b["consortium"]):
        raise WalletError(
            _ERR_PROVISION, "uploaded consortium.json differs from the one in the bundle"
        )
    try:
        text = cons_raw.decode()
    except UnicodeError:  # the host reads it strictly too: same verdict on both sides
        raise WalletError(_ERR_PROVISION, "consortium file is not UTF-8 text") from None
    try:
        cons = Consortium.from_json(text)
    except (HubiError, ValueError, KeyError) as e:
        raise WalletError(_ERR_PROVISION, "consortium file: %s" % e) from None
    del cons_raw, text
    gc.collect()
    trust = _staged_trust(w, cons)
    try:
        cons.check_signatures(trust)
        _trim(trust)
        tpl = codec.decode(b["template"], codec.TEMPLATE)
        pub = template_key(tpl, trust)
        _trim(trust)
    except (HubiError, ValueError) as e:
        raise WalletError(_ERR_VERIFY, "provisioning: %s" % e) from None
    priv = int.from_bytes(b["key"], "big")
    try:
        mine = suite.public_key(priv)
    except ValueError:
        raise WalletError(_ERR_PROVISION, "account key out of range") from None
    if not ct.equal(mine, pub):
        raise WalletError(_ERR_PROVISION, "the account key does not match the bank-sealed template")
    account = tpl["account"]
    del tpl
    allowance = None
    if b.get("allowance"):
        allowance = _check_allowance(b["allowance"], account, trust)
    pin = b["pin"]
    from core.keystore import check_pin

    try:
        check_pin(pin)
    except ValueError as e:
        raise WalletError(_ERR_PROVISION, str(e)) from None
    # bank keys for every later verification (public; saves 32 point additions each) and the
    # digest of each matrix file (checked before the file is used)
    banks = cons.bank_ids()
    keys = keys_record([(bank, trust.bank_key(bank), cons.banks[bank].matrix) for bank in banks])
    del trust, cons
    gc.collect()
    if "time" in b:
        w.clock.set_time(b["time"])
    # --- install: public files first, the keystore last (the commit point) -----------
    # a full flash can stop it at any step: the token is then what its flash holds (blank, or
    # provisioned if ks.bin was written), never blank in memory with its key committed and
    # its transport key gone, which no provisioning could get past
    try:
        st = w.storage
        st.remove_tree("trust")
        st.rename("stage/consortium.json", "trust/consortium.json")
        for bank in banks:
            st.rename("stage/%s.pub" % bank, "trust/%s.pub" % bank)
        w.records.put(KEYS, keys)
        w.records.put(TPL, b["template"])
        old = w.counter
        c = Counter(account)
        if old.account == account:  # same account again on this device: serials go on
            c.next_serial = old.next_serial
        c.last_time = w.now()
        if allowance is not None:
            _apply_allowance(c, allowance)
            w.records.put(ALLOW, allowance.raw)
        else:
            w.records.delete(ALLOW)
        w._save_counter(c)
        del allowance
        w.ks.create(account, priv, pin)  # commit point
        priv = None
        w.ks.drop_transport()
    except OSError:
        from core.fault import boot

        boot(w)
        raise
    st.remove_tree("stage")
    w.boot()
    return w.info()


def _check_allowance(raw, account, trust):
    from hubi_core import codec, ids
    from hubi_core.errors import CodecError
    from hubi_core.verify import verify_object

    try:
        a = codec.decode(raw, codec.ALLOWANCE)
    except CodecError as e:
        raise WalletError(_ERR_CODEC, "allowance: %s" % e) from None
    if a["account"] != account:
        raise WalletError(_ERR_VERIFY, "allowance is for %s, not %s" % (a["account"], account))
    if a.signer != ids.bank_of(account):
        raise WalletError(
            _ERR_VERIFY, "allowance signed by %s, not by the account's bank" % a.signer
        )
    rep = verify_object(a, trust)
    if not rep.ok:
        f = rep.first_failure()
        raise WalletError(_ERR_VERIFY, "allowance %s: %s" % (f[0], f[1]))
    return a


def _apply_allowance(c, a):
    c.allow_serial = a.serial
    c.cap = a["amount"]
    c.spent = 0
    c.expiry = a["expiry"]
    c.first = a["first_serial"]
    if c.next_serial < c.first:
        c.next_serial = c.first


def load_allowance(w, raw):
    from core.trust import load_trust

    w._need_ready()
    a = _check_allowance(bytes(raw), w.account, load_trust(w, matrices=False))
    c = w._copy_counter()
    if a.serial <= c.allow_serial:
        raise WalletError(
            _ERR_ALLOWANCE,
            "allowance #%d is not newer than the current #%d (replay refused)"
            % (a.serial, c.allow_serial),
        )
    _apply_allowance(c, a)
    if not c.account:
        c.account = w.account
    w.records.put(ALLOW, a.raw)
    w._save_counter(c)
    w.counter_damaged = False
    return w.info()["allowance"]
