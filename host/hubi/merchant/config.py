"""The merchant's home folder: its account identity, its trust bundle, its outbox.

    HOME/merchant.json   account, bank, currency (public settings)
    HOME/account.secret  the account's 32-byte private key (mode 0600, never printed)
    HOME/template.bin    the account's bank-sealed Template (public)
    HOME/trust/          consortium.json + matrices/ (what offline verification needs)
    HOME/outbox.sqlite   requests, accepted notes (exact bytes), receipts, bank outcomes, book
    HOME/qr/             PNGs of requests and receipts

A merchant's account is issued by its bank's KMC. ``init_from_bank_home`` does that directly
from a bank's home folder (hubi.kmc layout; demos and tests); ``import_identity`` takes a key
and template the bank handed over.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from hubi import jsonload, kmc, objects
from hubi.locks import folder_lock
from hubi_core import codec, ids, suite
from hubi_core.errors import HubiError
from hubi_core.verify import Trust, template_key

CONFIG = "merchant.json"
SECRET = "account.secret"
TEMPLATE = "template.bin"
TRUST = "trust"
OUTBOX = "outbox.sqlite"
QR_DIR = "qr"
ENV_HOME = "HUBI_MERCHANT_HOME"


class MerchantError(Exception):
    """A merchant operation that cannot go on; the message says what to do."""


def default_home() -> Path:
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env)
    return Path.home() / ".hubi" / "merchant"


@dataclass
class Identity:
    """The merchant's account: id, bank-sealed template, private key. repr() hides the key."""

    account: str
    template: codec.Obj
    private: int
    public_key: bytes

    def __repr__(self) -> str:
        return f"Identity(account={self.account!r}, key=<secret>)"

    @property
    def bank(self) -> str:
        return ids.bank_of(self.account)

    @property
    def currency(self) -> str:
        return self.template["currency"]


def _copy_trust(src: Path, dst: Path) -> None:
    src = Path(src)
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    # copytree makes folders 0777 less the umask: under umask 000 anyone could replace the
    # bundle the merchant verifies every note against
    for p in [tmp, *tmp.rglob("*")]:
        if not p.is_symlink():
            p.chmod(stat.S_IMODE(p.stat().st_mode) & ~stat.S_IWOTH)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _write_home(home: Path, private: int, template: codec.Obj, trust_src: Path) -> None:
    home = Path(home)
    _refuse_used(home)
    # Check the bundle and the identity first: a refused init writes nothing into the home.
    check_identity(private, template, kmc.load_trust(trust_src))
    home.mkdir(parents=True, exist_ok=True)
    # Two inits at once (a script retried, two terminals) both found no merchant.json and
    # both wrote: each said "set up", the home kept one identity (or one's key with the
    # other's template). Under a lock on the folder the second finds the first's files.
    with folder_lock(home):  # dropped when the process dies, even by SIGKILL
        _refuse_used(home)
        _copy_trust(trust_src, home / TRUST)
        kmc.write_secret(home / SECRET, private.to_bytes(32, "big"))
        kmc.write_atomic(home / TEMPLATE, codec.encode(template))
        cfg = {
            "account": template["account"],
            "bank": template.signer,
            "currency": template["currency"],
            "template": TEMPLATE,
            "trust": TRUST,
        }
        kmc.write_atomic(home / CONFIG, (json.dumps(cfg, indent=2) + "\n").encode())


def _refuse_used(home: Path) -> None:
    """MerchantError if `home` holds a merchant, or what is left of one."""
    if (home / CONFIG).exists():
        raise MerchantError(f"{home} already holds a merchant ({CONFIG}); pick another --home")
    # merchant.json lost but the rest kept: a new identity would overwrite the key of the
    # account the outbox's notes pay (and its book's signer). Without an outbox the home was
    # never used (an init killed before it wrote merchant.json): that one may be redone.
    if (home / OUTBOX).exists():
        raise MerchantError(
            f"{home} has no {CONFIG} but holds an outbox ({OUTBOX}) and the key of the account"
            f" its notes pay: restore its {CONFIG}, or pick another --home"
        )


def check_identity(private: int, template: codec.Obj, trust: Trust) -> bytes:
    """The account's public key if the template's seal verifies and the key matches it."""
    try:
        public = template_key(template, trust)
    except Exception as exc:  # VerifyError, unknown bank
        raise MerchantError(f"the account template does not verify: {exc}") from None
    if suite.public_key(suite.check_private(private)) != public:
        raise MerchantError(
            f"the private key does not belong to account {template['account']} "
            "(its public key differs from the template's)"
        )
    return public


def init_from_bank_home(
    home: Path,
    bank_home: Path,
    account: str,
    currency: str = "CNY",
    template_serial: int | None = None,
    now: int | None = None,
) -> None:
    """Issue `account` with its bank's KMC from a bank home folder (hubi.kmc layout)."""
    bank = ids.bank_of(ids.check_account_id(account, "account"))
    bank_home = Path(bank_home)
    if not (kmc.bank_dir(bank_home, bank) / "kmc.secret").exists():
        raise MerchantError(f"{bank_home} holds no KMC of bank {bank} (banks/{bank}/kmc.secret)")
    now = int(time.time()) if now is None else now
    serial = now if template_serial is None else template_serial
    private, template = kmc.issue_account(
        kmc.load_kmc(bank_home, bank),
        kmc.load_bank_identity(bank_home, bank),
        account,
        serial,
        now,
        currency,
    )
    _write_home(home, private, template, bank_home / "trust")


MAX_KEY_FILE = 1024  # 64 hex digits and a line break, with room for stray whitespace


def _read_small(path: Path, limit: int, what: str) -> bytes:
    """A regular file of at most `limit` bytes, or MerchantError naming it: a FIFO would hang
    the init, and /dev/zero given as a key fill its memory."""
    try:
        return objects.read_regular(path, limit, what)
    except objects.FileTooLong as exc:
        raise MerchantError(str(exc)) from None
    except ValueError as exc:
        raise MerchantError(f"{exc} ({what})") from None


MAX_TEMPLATE_FILE = 2 * codec.MAX_OBJECT + 256  # a Template as hex text, with line breaks


def import_identity(home: Path, key_file: Path, template_file: Path, trust_dir: Path) -> None:
    """Set up a merchant from a key file (32 bytes or 64 hex digits) and a template file
    (the bytes, or their hex)."""
    raw = _read_small(Path(key_file), MAX_KEY_FILE, "a private key")
    # A binary key is exactly 32 bytes (any of which may look like whitespace); only the hex
    # form may carry a trailing newline.
    if len(raw) != 32:
        text = raw.strip()
        if len(text) != 64:
            raise MerchantError(f"{key_file}: a private key is 32 bytes (or 64 hex digits)")
        try:
            raw = bytes.fromhex(text.decode())
        except ValueError:
            raise MerchantError(f"{key_file}: not a 32-byte key") from None
    if len(raw) != 32:
        raise MerchantError(f"{key_file}: a private key is 32 bytes (or 64 hex digits)")
    data = _read_small(Path(template_file), MAX_TEMPLATE_FILE, "an account template")
    # each said naming the file: "object truncated: suite needs 1 bytes at offset 0" or
    # "expected a Template, got a Note" left the person to guess which file was wrong
    if not data:
        raise MerchantError(f"{template_file}: empty file (an account template)")
    if objects.is_image(data):
        raise MerchantError(
            f"{template_file}: an image, not an account template: give the Template's bytes or"
            " hex, as `hubi bank open-account` writes them"
        )
    try:  # the Template's bytes, or their hex (as `consortium up` keeps an account's)
        data = objects.from_hex_text(data, Path(template_file))
    except ValueError as exc:
        raise MerchantError(str(exc)) from None
    try:
        template = codec.decode(data, codec.TEMPLATE)
    except HubiError as exc:
        raise MerchantError(f"{template_file}: not an account template: {exc}") from None
    _write_home(home, int.from_bytes(raw, "big"), template, trust_dir)


MAX_CONFIG = 1024 * 1024  # merchant.json is a few lines: past this it is not read further


def _read_config(cfg_path: Path) -> object:
    """merchant.json parsed, or MerchantError naming it (a FIFO, a huge or deeply nested file
    would hang, fill memory or overflow the parser's stack)."""
    try:
        raw = objects.read_regular(cfg_path, MAX_CONFIG, "merchant settings")
    except objects.FileTooLong as exc:
        raise MerchantError(f"{exc}: it is damaged") from None
    except ValueError as exc:
        raise MerchantError(f"{exc}: a merchant home keeps its settings in that file") from None
    try:
        return jsonload.loads(raw, "it")
    except jsonload.JsonError as exc:
        raise MerchantError(f"{cfg_path} is damaged: {exc}") from None


@dataclass
class MerchantHome:
    """An initialised merchant home folder."""

    path: Path
    account: str
    currency: str
    bank: str | None = None  # written by init; checked against the template

    @classmethod
    def open(cls, path: Path | None = None) -> MerchantHome:
        path = Path(path) if path is not None else default_home()
        cfg_path = path / CONFIG
        if not cfg_path.exists():
            raise MerchantError(
                f"no merchant in {path}: run `hubi merchant init` first (or pass --home)"
            )
        cfg = _read_config(cfg_path)
        if not isinstance(cfg, dict):
            raise MerchantError(f"{cfg_path} is damaged: it must be a JSON object")
        for key in ("account", "currency"):
            if not isinstance(cfg.get(key), str):
                raise MerchantError(f"{cfg_path} is damaged: it needs {key} (a string)")
        if cfg.get("bank") is not None and not isinstance(cfg["bank"], str):
            raise MerchantError(f"{cfg_path} is damaged: its bank must be a string")
        # the files sit at fixed names: a file that names others would be silently ignored
        for key, name in (("template", TEMPLATE), ("trust", TRUST)):
            if cfg.get(key, name) != name:
                raise MerchantError(
                    f"{cfg_path} names {key} {cfg[key]!r}: a merchant home keeps it as {name}"
                    " (copy it there)"
                )
        return cls(path, cfg["account"], cfg["currency"], cfg.get("bank"))

    def _read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise MerchantError(f"merchant home {self.path} has no {name}") from None

    @property
    def outbox_path(self) -> Path:
        return self.path / OUTBOX

    @property
    def trust_dir(self) -> Path:
        return self.path / TRUST

    @property
    def qr_dir(self) -> Path:
        return self.path / QR_DIR

    def load_trust(self) -> Trust:
        return kmc.load_trust(self.trust_dir)

    def load_identity(self, trust: Trust) -> Identity:
        template = codec.decode(self._read(TEMPLATE), codec.TEMPLATE)
        for what, sealed, said in (
            ("account", template["account"], self.account),
            ("currency", template["currency"], self.currency),
            ("bank", template.signer, self.bank or template.signer),
        ):
            if sealed != said:  # the template is what the bank sealed: it decides
                raise MerchantError(
                    f"{self.path / TEMPLATE} is for {what} {sealed}, {CONFIG} says {said}"
                )
        raw = self._read(SECRET)
        if len(raw) != 32:
            raise MerchantError(f"{SECRET} is corrupt ({len(raw)} bytes)")
        private = int.from_bytes(raw, "big")
        public = check_identity(private, template, trust)
        return Identity(self.account, template, private, public)
