"""`hubi merchant init --key FILE --template FILE` read both files whole: a FIFO given as either
hung the init for ever, and /dev/zero filled its memory. They are now read only if they are
regular files, and bounded (a key file is 32 bytes or 64 hex digits, a template at most a hubi
object's 4,096 bytes as hex, with line breaks); the error names the file and what it was for, and no home is made.
Real `hubi` processes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.test_merchant_support import hubi, hubi_json, make_shop


def _init(home: Path, key: Path | str, template: Path | str, trust: Path) -> tuple[int, dict]:
    return hubi_json("merchant", "--home", str(home), "init", "--key", str(key),
                     "--template", str(template), "--trust", str(trust))  # fmt: skip


def test_a_fifo_or_a_huge_file_as_key_or_template_is_refused(tmp_path: Path) -> None:
    shop = make_shop(tmp_path / "shop")
    key, template, trust = (shop.home / n for n in ("account.secret", "template.bin", "trust"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_text("ab" * 5000)  # longer than a template's hex
    home = tmp_path / "new"
    for k, t, words in (
        (fifo, template, f"{fifo}: a FIFO, not a file to read (a private key)"),
        (key, fifo, f"{fifo}: a FIFO, not a file to read (an account template)"),
        (big, template, f"{big}: more than 1,024 bytes, too long for a private key"),
        (key, big, f"{big}: more than 8,448 bytes, too long for an account template"),
    ):
        code, out = _init(home, k, t, trust)
        assert code == 2 and out["message"] == words, out
        assert not home.exists()
    code, out = _init(home, key, template, trust)  # the right files still set it up
    assert code == 0 and out["ok"], out


def test_dev_zero_as_key_or_template_is_refused_at_once(tmp_path: Path) -> None:
    shop = make_shop(tmp_path / "shop")
    key, template, trust = (shop.home / n for n in ("account.secret", "template.bin", "trust"))
    for k, t, what in ((Path("/dev/zero"), template, "a private key"),
                       (key, Path("/dev/zero"), "an account template")):  # fmt: skip
        proc = hubi("merchant", "--home", str(tmp_path / "new"), "init", "--key", str(k),
                    "--template", str(t), "--trust", str(trust))  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"/dev/zero: a character device, not a file to read ({what})" in proc.stderr
        assert not (tmp_path / "new").exists()


def test_a_template_given_as_hex_text_sets_the_merchant_up(tmp_path: Path) -> None:
    # `consortium up` keeps a demo account's Template as hex (home/accounts/<ID>.json): it was
    # refused as "unknown suite 48 ... these bytes are text"
    shop = make_shop(tmp_path / "shop")
    key, template, trust = (shop.home / n for n in ("account.secret", "template.bin", "trust"))
    as_hex = tmp_path / "template.hex"
    hexed = template.read_bytes().hex()
    as_hex.write_text("\n".join(hexed[i : i + 64] for i in range(0, len(hexed), 64)) + "\n")
    code, out = _init(tmp_path / "new", key, as_hex, trust)
    assert code == 0 and out["ok"], out
    assert (tmp_path / "new" / "template.bin").read_bytes() == template.read_bytes()
    odd = tmp_path / "odd.hex"
    odd.write_text(hexed[:-1])
    code, out = _init(tmp_path / "other", key, odd, trust)
    assert code == 2 and out["message"] == f"{odd}: hex text that does not make whole bytes", out
