"""The wallet: provisioning, offline allowance, payments, notices, history (DESIGN sections 2, 7).

Pure logic over the HAL's Storage, Clock and Rng; no screen, no link (core.token wires those).

Files besides the keystore's (records, core.store):
    tpl.obj          the account's Template (bank-sealed)
    allow.obj        the current OfflineAllowance (bank-signed)
    ctr.bin          account, next note serial, allowance serial/cap/spent/expiry/first serial,
                     last known time: written BEFORE a note is signed (persist-then-sign)
    trust/           consortium.json, <BANK>.pub (public matrices, read from flash by offset),
                     keys.bin (the banks' public keys, computed once at provisioning)
    hist/nNNNNNNNN   the last HISTORY notes;  hist/bal, hist/rcpt   last balance notice, receipt
    stage/           public files uploaded for a provisioning that has not been committed

Payment (``prepare`` then ``sign``): the request is verified offline (hubi_core.verify with a
file-backed Trust), its expiry checked against the clock, the amount against the allowance;
after the PIN, ``sign`` writes ctr.bin with serial + 1 and spent + amount and only then signs,
so a power cut can lose a note but never reuse a serial or sign past the allowance.
"""

import gc
import hashlib

from core import fmt
from core.store import Corrupt
from hubi_core import codec, ct, ecies, ids, suite, tokenmsg
from hubi_core import protocol as P
from hubi_core.consortium import Consortium
from hubi_core.cpk import PublicMatrix
from hubi_core.errors import CodecError, HubiError, VerifyError
from hubi_core.verify import Trust, template_key, verify_object

HISTORY = 8
TPL = "tpl.obj"
ALLOW = "allow.obj"
CTR = "ctr.bin"
KEYS = "trust/keys.bin"
CONS = "trust/consortium.json"
BAL = "hist/bal"
RCPT = "hist/rcpt"
PAID = "hist/paid"  # digests of the last paid requests
PAID_MAX = 16
BALANCE_INFO = b"hubi/balance/1\x00"  # ECIES info prefix of a BalanceNotice's balance (+ payer)


class WalletError(Exception):
    """A refusal with a reason the user and the host can act on. ``code``: protocol ERR_*."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


def _u64(n):
    return n.to_bytes(8, "big")


class Counter:
    """ctr.bin: what must never go backwards."""

    __slots__ = (
        "account",
        "next_serial",
        "allow_serial",
        "cap",
        "spent",
        "expiry",
        "first",
        "last_time",
    )

    def __init__(
        self,
        account="",
        next_serial=1,
        allow_serial=0,
        cap=0,
        spent=0,
        expiry=0,
        first=0,
        last_time=0,
    ):
        self.account = account
        self.next_serial = next_serial
        self.allow_serial = allow_serial
        self.cap = cap
        self.spent = spent
        self.expiry = expiry
        self.first = first
        self.last_time = last_time

    def to_bytes(self):
        a = self.account.encode()
        return (
            bytes([len(a)])
            + a
            + _u64(self.next_serial)
            + _u64(self.allow_serial)
            + _u64(self.cap)
            + _u64(self.spent)
            + self.expiry.to_bytes(4, "big")
            + _u64(self.first)
            + self.last_time.to_bytes(4, "big")
        )

    @classmethod
    def from_bytes(cls, b):
        n = b[0]
        p = 1 + n
        g = lambda i, k=8: int.from_bytes(b[p + i : p + i + k], "big")  # noqa: E731
        return cls(bytes(b[1:p]).decode(), g(0), g(8), g(16), g(24), g(32, 4), g(36), g(44, 4))

    def left(self):
        return self.cap - self.spent if self.cap > self.spent else 0


class Payment:
    """A payment being confirmed: what the screen shows and what the note will carry."""

    __slots__ = ("payee", "amount", "purpose", "currency", "request", "kind", "expiry")

    def __init__(self, payee, amount, purpose, currency, request=None, kind="request", expiry=0):
        self.payee = payee
        self.amount = amount
        self.purpose = purpose
        self.currency = currency
        self.request = request
        self.kind = kind
        self.expiry = expiry

    def summary(self):
        return {
            "payee": self.payee,
            "amount": self.amount,
            "amount_text": fmt.amount(self.amount, self.currency),
            "purpose": self.purpose or "",
            "kind": self.kind,
            "expiry": self.expiry,
        }


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
            data = self.pending + bytes(chunk)
            if not data:
                return
            k = data[0]
            if len(data) < 1 + k:
                self.pending = data
                return
            self.name = tokenmsg.check_file_name(bytes(data[1 : 1 + k]).decode())
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
            raise WalletError(P.ERR_BAD_PAYLOAD, "PROVISION_FILE: no file name")
        self.f.close()
        self.f = None
        st = self.wallet.storage
        st.rename("stage/" + self.name + ".part", "stage/" + self.name)
        return self.h.digest()


class Wallet:
    def __init__(self, storage, keystore, clock, settings=None):
        self.storage = storage
        self.ks = keystore
        self.clock = clock
        self.settings = settings or {}
        self.trust = None
        self.template = None
        self.counter = None
        self.account = None
        self.currency = ""
        self.pending = None  # headless: the Payment waiting for PAY_CONFIRM
        self._pub = None
        keystore.on_wipe = self._on_wipe

    # -------------------------------------------------------------------------- boot
    def boot(self):
        ready = self.ks.boot()
        self.records = self.ks.records
        self.counter = self._load_counter()
        if self.counter.last_time and not self.clock.is_set():
            self.clock.set_time(self.counter.last_time)
        if not ready:
            self.account = None
            self.template = None
            return False
        try:
            self.template = codec.decode(self.records.get(TPL), codec.TEMPLATE)
        except (Corrupt, CodecError, TypeError):
            # a keystore without its template cannot pay: treat as blank (wipe leftovers)
            self.ks.wipe()
            return False
        self.account = self.template["account"]
        self.currency = self.template["currency"]
        return True

    @property
    def provisioned(self):
        return self.account is not None

    def _load_counter(self):
        """ctr.bin; a damaged one (never a torn write: writes are atomic) reads as "no
        allowance", so nothing is signed until the bank loads a new allowance whose
        first_serial restarts the serials above every note it knows of."""
        self.counter_damaged = False
        try:
            body = self.records.get(CTR)
        except Corrupt:
            self.counter_damaged = True
            body = None
        return Counter.from_bytes(body) if body else Counter()

    def _save_counter(self, c):
        self.records.put(CTR, c.to_bytes())
        self.counter = c

    def now(self):
        t = self.clock.time()
        if self.counter is not None and t < self.counter.last_time:
            t = self.counter.last_time
        return t

    def set_time(self, t):
        self.clock.set_time(t)

    # ------------------------------------------------------------------------- trust
    def load_trust(self):
        if self.trust is not None:
            return self.trust
        raw = self.storage.read(CONS)
        if raw is None:
            raise WalletError(P.ERR_STATE, "no consortium file on the token (provision it)")
        cons = Consortium.from_json(raw.decode())
        del raw
        self.trust = self._trust(cons, "trust/")
        try:
            keys = self.records.get(KEYS)
        except Corrupt:
            keys = None
        if keys:
            p = 0
            while p < len(keys):
                n = keys[p]
                bank = bytes(keys[p + 1 : p + 1 + n]).decode()
                self.trust._bank_keys[bank] = bytes(keys[p + 1 + n : p + 66 + n])
                p += 66 + n
        return self.trust

    def _trust(self, cons, folder):
        mats = {}
        for b in cons.bank_ids():
            name = folder + b + ".pub"
            if not self.storage.exists(name):
                raise WalletError(
                    P.ERR_PROVISION, "public matrix of bank %s missing (%s)" % (b, name)
                )
            mats[b] = PublicMatrix.open(self.storage.path(name))
        try:
            return Trust(cons, mats)
        except VerifyError as e:
            raise WalletError(P.ERR_PROVISION, str(e)) from None

    def trim(self):
        """Drop decoded matrix points (a 96 KB heap has no room for a cache of them)."""
        if self.trust is not None:
            for m in self.trust.matrices.values():
                m._points.clear()
                m._cache.clear()
        gc.collect()

    # ------------------------------------------------------------------------ info
    def info(self):
        c = self.counter
        out = {
            "state": "ready" if self.provisioned else "blank",
            "account": self.account,
            "currency": self.currency,
            "next_serial": max(c.next_serial, c.first) if self.provisioned else None,
            "pin_tries_left": self.ks.tries_left() if self.provisioned else None,
            "time": self.now(),
            "clock_set": self.clock.is_set(),
            "notes": len(self.note_serials()),
        }
        tk = self.ks.transport_public()
        out["transport_key"] = fmt.hexs(tk) if tk else None
        if self.provisioned and c.allow_serial:
            out["allowance"] = {
                "serial": c.allow_serial,
                "cap": c.cap,
                "spent": c.spent,
                "left": c.left(),
                "expiry": c.expiry,
                "first_serial": c.first,
            }
        else:
            out["allowance"] = None
        return out

    # ----------------------------------------------------------------- provisioning
    def stage_sink(self, total):
        if self.provisioned:
            raise WalletError(P.ERR_STATE, "token already provisioned: wipe it first")
        return FileSink(self, total)

    def clear_stage(self):
        self.storage.remove_tree("stage")

    def provision(self, blob):
        """Check and install a sealed provisioning bundle (see hubi_core.tokenmsg)."""
        try:
            return self._provision(blob)
        except BaseException:
            self.trust = None
            self.trim()
            raise

    def _provision(self, blob):
        if self.provisioned:
            raise WalletError(P.ERR_STATE, "token already provisioned: wipe it first")
        try:
            plain = ecies.open_sealed(
                self.ks.transport_private(), bytes(blob), tokenmsg.PROVISION_INFO
            )
        except ValueError as e:
            raise WalletError(
                P.ERR_PROVISION, "cannot open the provisioning bundle: %s" % e
            ) from None
        try:
            b = tokenmsg.decode_bundle(plain)
        except HubiError as e:
            raise WalletError(P.ERR_PROVISION, str(e)) from None
        del plain
        cons_raw = self.storage.read("stage/consortium.json")
        if cons_raw is None:
            raise WalletError(P.ERR_PROVISION, "consortium.json was not uploaded (PROVISION_FILE)")
        if not ct.equal(hashlib.sha256(cons_raw).digest(), b["consortium"]):
            raise WalletError(
                P.ERR_PROVISION, "uploaded consortium.json differs from the one in the bundle"
            )
        try:
            cons = Consortium.from_json(cons_raw.decode())
        except (HubiError, ValueError, KeyError) as e:
            raise WalletError(P.ERR_PROVISION, "consortium file: %s" % e) from None
        del cons_raw
        trust = self._trust(cons, "stage/")
        self.trust = trust
        try:
            cons.check_signatures(trust)
            self.trim()
            tpl = codec.decode(b["template"], codec.TEMPLATE)
            pub = template_key(tpl, trust)
            self.trim()
        except (HubiError, ValueError) as e:
            raise WalletError(P.ERR_VERIFY, "provisioning: %s" % e) from None
        priv = int.from_bytes(b["key"], "big")
        try:
            mine = suite.public_key(priv)
        except ValueError:
            raise WalletError(P.ERR_PROVISION, "account key out of range") from None
        if not ct.equal(mine, pub):
            raise WalletError(
                P.ERR_PROVISION, "the account key does not match the bank-sealed template"
            )
        account = tpl["account"]
        allowance = None
        if b.get("allowance"):
            allowance = self._check_allowance(b["allowance"], account, trust)
        pin = b["pin"]
        from core.keystore import check_pin

        try:
            check_pin(pin)
        except ValueError as e:
            raise WalletError(P.ERR_PROVISION, str(e)) from None
        # bank keys for every later verification (public; saves 32 point additions each)
        keys = b""
        for bank in cons.bank_ids():
            bid = bank.encode()
            keys += bytes([len(bid)]) + bid + trust.bank_key(bank)
        self.trim()
        self.trust = None
        if "time" in b:
            self.clock.set_time(b["time"])
        # --- install: public files first, the keystore last (the commit point) -----------
        st = self.storage
        st.remove_tree("trust")
        st.rename("stage/consortium.json", CONS)
        for bank in cons.bank_ids():
            st.rename("stage/%s.pub" % bank, "trust/%s.pub" % bank)
        self.records.put(KEYS, keys)
        self.records.put(TPL, b["template"])
        old = self.counter
        c = Counter(account)
        if old.account == account:  # same account again on this device: serials go on
            c.next_serial = old.next_serial
        c.last_time = self.now()
        if allowance is not None:
            self._apply_allowance(c, allowance)
            self.records.put(ALLOW, allowance.raw)
        else:
            self.records.delete(ALLOW)
        self._save_counter(c)
        self.ks.create(account, priv, pin)  # commit point
        del priv
        self.ks.drop_transport()
        self.clear_stage()
        self.trust = None
        self.boot()
        self.trim()
        return self.info()

    # --------------------------------------------------------------------- allowance
    def _check_allowance(self, raw, account, trust):
        try:
            a = codec.decode(raw, codec.ALLOWANCE)
        except CodecError as e:
            raise WalletError(P.ERR_CODEC, "allowance: %s" % e) from None
        if a["account"] != account:
            raise WalletError(P.ERR_VERIFY, "allowance is for %s, not %s" % (a["account"], account))
        if a.signer != ids.bank_of(account):
            raise WalletError(
                P.ERR_VERIFY, "allowance signed by %s, not by the account's bank" % a.signer
            )
        rep = verify_object(a, trust)
        if not rep.ok:
            f = rep.first_failure()
            raise WalletError(P.ERR_VERIFY, "allowance %s: %s" % (f[0], f[1]))
        return a

    def _apply_allowance(self, c, a):
        c.allow_serial = a.serial
        c.cap = a["amount"]
        c.spent = 0
        c.expiry = a["expiry"]
        c.first = a["first_serial"]
        if c.next_serial < c.first:
            c.next_serial = c.first

    def load_allowance(self, raw):
        self._need_ready()
        a = self._check_allowance(bytes(raw), self.account, self.load_trust())
        self.trim()
        c = self._copy_counter()
        if a.serial <= c.allow_serial:
            raise WalletError(
                P.ERR_ALLOWANCE,
                "allowance #%d is not newer than the current #%d (replay refused)"
                % (a.serial, c.allow_serial),
            )
        self._apply_allowance(c, a)
        if not c.account:
            c.account = self.account
        self.records.put(ALLOW, a.raw)
        self._save_counter(c)
        self.counter_damaged = False
        return self.info()["allowance"]

    def _copy_counter(self):
        return Counter.from_bytes(self.counter.to_bytes())

    # ----------------------------------------------------------------------- payment
    def _need_ready(self):
        if not self.provisioned:
            raise WalletError(P.ERR_STATE, "token not provisioned")

    def _check_spend(self, amount):
        c = self.counter
        if not c.allow_serial:
            if getattr(self, "counter_damaged", False):
                raise WalletError(
                    P.ERR_STORAGE,
                    "the serial counter is damaged: the bank must load a new allowance",
                )
            raise WalletError(P.ERR_ALLOWANCE, "no offline allowance loaded: load one while online")
        if c.expiry and self.clock.is_set() and self.now() > c.expiry:
            raise WalletError(P.ERR_ALLOWANCE, "offline allowance #%d expired" % c.allow_serial)
        if amount <= 0:
            raise WalletError(P.ERR_BAD_PAYLOAD, "amount must be positive")
        if amount > c.left():
            raise WalletError(
                P.ERR_ALLOWANCE,
                "amount %s exceeds the offline allowance left (%s)"
                % (fmt.amount(amount, self.currency), fmt.amount(c.left(), self.currency)),
            )

    def prepare(self, raw):
        """Verify a payee's Request offline; return the Payment to confirm."""
        self._need_ready()
        try:
            req = codec.decode(bytes(raw), codec.REQUEST)
        except CodecError as e:
            raise WalletError(P.ERR_CODEC, "request: %s" % e) from None
        if req.signer == self.account:
            raise WalletError(P.ERR_VERIFY, "the request is from this token's own account")
        tpl = req["template"]
        if tpl["currency"] != self.currency:
            raise WalletError(
                P.ERR_VERIFY,
                "request is in %s, this account holds %s" % (tpl["currency"], self.currency),
            )
        trust = self.load_trust()
        rep = verify_object(req, trust)
        self.trim()
        if not rep.ok:
            f = rep.first_failure()
            raise WalletError(P.ERR_VERIFY, "request not genuine: %s: %s" % (f[0], f[1]))
        if self.clock.is_set() and self.now() > req["expiry"]:
            raise WalletError(
                P.ERR_EXPIRED, "request expired at %d (now %d)" % (req["expiry"], self.now())
            )
        done = self.paid_serial(req.raw)
        if done is not None:
            raise WalletError(
                P.ERR_STATE, "this request was already paid by note #%d (ask for a new one)" % done
            )
        amount = req["amount"]
        self._check_spend(amount)
        return Payment(
            req.signer, amount, req.get("purpose"), self.currency, req.raw, "request", req["expiry"]
        )

    def prepare_typed(self, payee, amount, purpose=None):
        """A payment typed on the device (no signed request): payee and amount checked."""
        self._need_ready()
        try:
            ids.check_account_id(payee, "payee")
        except CodecError as e:
            raise WalletError(P.ERR_VERIFY, str(e)) from None
        if payee == self.account:
            raise WalletError(P.ERR_VERIFY, "cannot pay this token's own account")
        bank = ids.bank_of(payee)
        if bank not in self.load_trust().consortium.banks:
            raise WalletError(P.ERR_VERIFY, "bank %s is not in the consortium" % bank)
        self._check_spend(amount)
        return Payment(payee, amount, purpose, self.currency, None, "typed")

    def sign(self, pay, priv):
        """Persist serial + 1 and the allowance decrement, THEN sign; returns the note bytes."""
        self._need_ready()
        self._check_spend(pay.amount)
        c = self._copy_counter()
        serial = c.next_serial if c.next_serial >= c.first else c.first
        t = self.now()
        c.next_serial = serial + 1
        c.spent += pay.amount
        c.last_time = t
        self._save_counter(c)  # <- the point of no return: this serial is used up
        # no allowance field: the bank finds the allowance a note spends from its serial (each
        # allowance covers the serials from its first_serial on), which keeps notes ~70 bytes
        # shorter (one QR version less)
        note = codec.make_note(self.template, serial, t, pay.amount, pay.payee, pay.purpose)
        codec.sign(note, priv)
        raw = codec.encode(note)
        del note
        self._keep_note(serial, raw)
        if pay.request is not None:
            self._remember_request(pay.request, serial)
        gc.collect()
        return raw

    # -------------------------------------------------------------- paid requests
    def _paid(self):
        try:
            return self.records.get(PAID) or b""
        except Corrupt:
            return b""

    def _remember_request(self, request, serial):
        """Keep the digests of the last PAID_MAX paid requests (16 bytes + serial each), so
        the same Request shown twice is not paid twice by mistake."""
        entry = hashlib.sha256(bytes(request)).digest()[:16] + _u64(serial)
        self.records.put(PAID, (self._paid() + entry)[-24 * PAID_MAX :])

    def paid_serial(self, request):
        """Serial of the note that already paid this request, or None."""
        d = hashlib.sha256(bytes(request)).digest()[:16]
        b = self._paid()
        for i in range(0, len(b), 24):
            if ct.equal(b[i : i + 16], d):
                return int.from_bytes(b[i + 16 : i + 24], "big")
        return None

    # ----------------------------------------------------------------------- history
    def _keep_note(self, serial, raw):
        self.records.put("hist/n%08d" % serial, raw)
        names = [n for n in self.storage.listdir("hist") if n[0] == "n" and not n.endswith(".tmp")]
        for n in names[:-HISTORY]:
            self.records.delete("hist/" + n)

    def note_serials(self):
        out = []
        for n in self.storage.listdir("hist"):
            if n[0] == "n" and not n.endswith(".tmp"):
                try:
                    out.append(int(n[1:]))
                except ValueError:
                    pass
        return out

    def note(self, serial=None):
        serials = self.note_serials()
        if not serials:
            raise WalletError(P.ERR_NOT_FOUND, "no notes kept on this token")
        if serial is None:
            serial = serials[-1]
        if serial not in serials:
            raise WalletError(
                P.ERR_NOT_FOUND, "note #%d is not kept (kept: %s)" % (serial, serials)
            )
        try:
            raw = self.records.get("hist/n%08d" % serial)
        except Corrupt as e:
            raise WalletError(P.ERR_STORAGE, str(e)) from None
        return raw

    def history(self):
        out = []
        for s in self.note_serials():
            try:
                n = codec.decode(self.records.get("hist/n%08d" % s), codec.NOTE)
            except (Corrupt, CodecError, TypeError):
                continue
            out.append(
                {
                    "serial": s,
                    "time": n.time,
                    "amount": n["amount"],
                    "payee": n["payee"],
                    "purpose": n.get("purpose") or "",
                    "note_id": fmt.hexs(codec.note_id(n.signer, s)),
                    "receipt": False,
                }
            )
        r = self._get_obj(RCPT)
        if r is not None:
            rid = bytes(r["note_id"])
            for h in out:
                if h["note_id"] == fmt.hexs(rid):
                    h["receipt"] = True
        return out

    def _get_obj(self, name):
        try:
            raw = self.records.get(name)
            return codec.decode(raw) if raw else None
        except (Corrupt, CodecError):
            return None

    # ----------------------------------------------------------------------- notices
    def load_notice(self, raw):
        """A BalanceNotice (from the payer's bank) or a Receipt (from a payee), verified."""
        self._need_ready()
        try:
            obj = codec.decode(bytes(raw))
        except CodecError as e:
            raise WalletError(P.ERR_CODEC, "notice: %s" % e) from None
        if obj.kind not in (codec.BALANCE, codec.RECEIPT):
            raise WalletError(
                P.ERR_CODEC, "expected a BalanceNotice or a Receipt, got a %s" % obj.kind_name
            )
        if obj["payer"] != self.account:
            raise WalletError(
                P.ERR_VERIFY,
                "%s is for payer %s, not %s" % (obj.kind_name, obj["payer"], self.account),
            )
        if obj.kind == codec.BALANCE and obj.signer != ids.bank_of(self.account):
            raise WalletError(
                P.ERR_VERIFY, "balance notice signed by %s, not by our bank" % obj.signer
            )
        rep = verify_object(obj, self.load_trust())
        self.trim()
        if not rep.ok:
            f = rep.first_failure()
            raise WalletError(P.ERR_VERIFY, "%s not genuine: %s: %s" % (obj.kind_name, f[0], f[1]))
        out = {
            "kind": obj.kind_name,
            "signer": obj.signer,
            "serial": obj.serial,
            "amount": obj["amount"],
            "payee": obj["payee"] if obj.kind == codec.BALANCE else obj.signer,
            "note_id": fmt.hexs(obj["note_id"]),
        }
        if obj.kind == codec.BALANCE:
            old = self._get_obj(BAL)
            if old is not None and old.serial > obj.serial:
                raise WalletError(
                    P.ERR_VERIFY, "balance notice #%d is older than #%d" % (obj.serial, old.serial)
                )
            self.records.put(BAL, obj.raw)
        else:
            out["purpose"] = obj.get("purpose") or ""
            self.records.put(RCPT, obj.raw)
        return out

    def balance(self, priv):
        """Decrypt the latest BalanceNotice's balance with the account key."""
        n = self._get_obj(BAL)
        if n is None:
            raise WalletError(P.ERR_NOT_FOUND, "no balance notice loaded")
        blob = n["balance"]
        value = None
        for info in (BALANCE_INFO + self.account.encode(), b""):
            try:
                plain = ecies.open_sealed(priv, blob, info)
            except ValueError:
                continue
            value = _balance_value(plain)
            break
        if value is None:
            raise WalletError(
                P.ERR_VERIFY,
                "the balance in notice #%d does not open with this account's key" % n.serial,
            )
        return {
            "balance": value,
            "balance_text": fmt.amount(value, self.currency),
            "notice_serial": n.serial,
            "bank": n.signer,
            "debited": n["amount"],
            "payee": n["payee"],
            "time": n.time,
        }

    # -------------------------------------------------------------------------- wipe
    def _on_wipe(self):
        """Called by the keystore after the account key is destroyed."""
        st = self.storage
        for name in (TPL, ALLOW):
            self.records.delete(name)
        st.remove_tree("hist")
        st.remove_tree("trust")
        st.remove_tree("stage")
        self.trust = None
        self.template = None
        self.account = None
        self.pending = None

    def wipe(self):
        self.ks.wipe()
        self.boot()


def _balance_value(plain):
    """The balance plaintext: 8-byte big-endian signed minor units (the bank node's format,
    host/hubi/bank/engine.py), else a varint or ASCII digits."""
    if len(plain) == 8:
        v = int.from_bytes(plain, "big")
        return v - (1 << 64) if v >= 1 << 63 else v
    try:
        s = bytes(plain).decode()
        if s and s.isdigit():
            return int(s)
    except UnicodeError:
        pass
    from hubi_core.wire import Reader

    return Reader(plain, "balance").varint("balance")
