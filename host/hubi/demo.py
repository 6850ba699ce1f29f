"""The end-to-end story `make demo` tells, on one machine with the embedded defaults."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubi import kmc as kmc_mod
from hubi import qrscan
from hubi_core import codec, qr, verify

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
CURRENCY = "CNY"

Say = Callable[[str], None]


def _write(path: Path, data: bytes) -> str:
    kmc_mod.write_atomic(path, data)
    return str(path)


def run_demo(workdir: Path, say: Say = print) -> dict[str, Any]:
    """Run the story in `workdir`; returns the JSON summary (files, checks, figures)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    now = int(time.time())

    say("1. Two banks, BKA and BKB, each set up a KMC (32x32 CPK matrix) and a signing key.")
    kmcs = {bank: kmc_mod.Kmc.create(bank) for bank in ("BKA", "BKB")}
    consortium, banks = kmc_mod.make_consortium("hubi-demo", kmcs, time=now)
    trust_dir = workdir / "trust"
    kmc_mod.save_trust(trust_dir, consortium, {b: k.public for b, k in kmcs.items()})
    trust = kmc_mod.load_trust(trust_dir)
    files["trust"] = str(trust_dir)
    files["consortium"] = str(trust_dir / "consortium.json")
    say(
        f"   consortium file signed by both founders; public matrices {len(kmcs['BKA'].public.to_bytes()):,} bytes each"
    )

    say(f"2. BKA opens the payer's account {PAYER}; BKB opens the merchant's account {PAYEE}.")
    accounts = {}
    for serial, (account, bank) in enumerate(((PAYER, "BKA"), (PAYEE, "BKB")), start=1):
        priv, sep = kmcs[bank].issue(account)
        tpl = codec.make_template(bank, serial, now, account, CURRENCY, sep)
        codec.sign(tpl, banks[bank].private)
        files[f"template_{account}"] = _write(
            workdir / f"template-{account}.bin", codec.encode(tpl)
        )
        accounts[account] = (priv, tpl)
    say("   each template carries the account's separating public key under its bank's seal")

    say("3. The merchant asks for 12.50 CNY for 'coffee+cake'.")
    payee_priv, payee_tpl = accounts[PAYEE]
    request = codec.make_request(PAYEE, 1, now, payee_tpl, 1250, now + 600, "coffee+cake")
    codec.sign(request, payee_priv)
    request_bytes = codec.encode(request)
    files["request"] = _write(workdir / "request.bin", request_bytes)
    files["request_png"] = str(qrscan.render_png(request_bytes, workdir / "request.png"))

    say("4. The payer checks the request offline and signs a note, field by field.")
    req = codec.decode(request_bytes, codec.REQUEST)
    req_report = verify.verify_object(req, trust)
    req_report.raise_if_failed()
    payer_priv, payer_tpl = accounts[PAYER]
    note = codec.make_note(payer_tpl, 1, now + 5, req["amount"], req.signer, req.get("purpose"))
    codec.sign(note, payer_priv)
    note_bytes = codec.encode(note)
    files["note"] = _write(workdir / "note.bin", note_bytes)
    files["note_png"] = str(qrscan.render_png(note_bytes, workdir / "note.png"))
    versions = {lvl: qr.min_version(len(note_bytes), lvl) for lvl in ("L", "M")}
    say(
        f"   note: {len(note_bytes)} bytes, QR version {versions['L']} at level L, {versions['M']} at M"
    )

    say(
        "5. The merchant scans the note's QR and verifies it offline (matrices + consortium file only)."
    )
    scanned = qrscan.collect([Path(files["note_png"])])
    if scanned != note_bytes:
        raise RuntimeError("the scanned note differs from the signed note")
    report = verify.verify_note(scanned, trust, None)
    for field, ok, reason in report.checks:
        say(f"   {field:<9} {'ok' if ok else 'FAILED ' + reason}")
    say("   accepted offline" if report.ok else "   REJECTED")

    return {
        "ok": report.ok and req_report.ok,
        "notes_signed": 1,
        "notes_verified_offline": 1 if report.ok else 0,
        "note": {
            "bytes": len(note_bytes),
            "qr_version": versions,
            "verification": report.as_dict(),
        },
        "files": files,
    }
