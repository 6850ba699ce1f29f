# Runs under MicroPython: rebuild and sign the same objects as CPython, decode CPython's bytes,
# verify them offline, and print everything as JSON for the test to compare.
import json
import sys

from hubi_core import codec, cpk, lsum, verify
from hubi_core.consortium import Consortium

with open(sys.argv[1]) as f:
    spec = json.load(f)
matrices = {
    b: cpk.PublicMatrix.from_bytes(bytes.fromhex(h), validate=False)
    for b, h in spec["matrices"].items()
}
cons = Consortium.from_json(spec["consortium"])
trust = verify.Trust(cons, matrices)
cons.check_signatures(trust)

out = {"encoded": [], "reencoded": [], "verified": []}
for item in spec["build"]:
    priv = int(item["priv"], 16)
    tpl = (
        codec.decode(bytes.fromhex(item["template"]), codec.TEMPLATE)
        if item.get("template")
        else None
    )
    if item["kind"] == "note":
        obj = codec.make_note(
            tpl, item["serial"], item["time"], item["amount"], item["payee"], item["purpose"]
        )
    elif item["kind"] == "request":
        obj = codec.make_request(
            tpl["account"],
            item["serial"],
            item["time"],
            tpl,
            item["amount"],
            item["expiry"],
            item["purpose"],
        )
    else:
        obj = codec.make_template(
            item["bank"],
            item["serial"],
            item["time"],
            item["account"],
            item["currency"],
            bytes.fromhex(item["key"]),
        )
    codec.sign(obj, priv)
    out["encoded"].append(codec.encode(obj).hex())

for h in spec["decode"]:
    obj = codec.decode(bytes.fromhex(h))
    out["reencoded"].append(codec.encode(obj).hex())
    rep = verify.verify_object(obj, trust)
    out["verified"].append([rep.ok, rep.failed])

out["refused"] = []
for h in spec.get("refuse", []):
    try:
        codec.decode(bytes.fromhex(h))
        out["refused"].append("accepted")
    except Exception as e:
        out["refused"].append(str(e))

out["lsum"] = lsum.lsum("BKA-000000000042", 7, 1250, "coffee", "BKB-000000000007")
out["note_id"] = lsum.note_id("BKA-000000000042", 7).hex()
print(json.dumps(out))
