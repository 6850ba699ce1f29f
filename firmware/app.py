"""The token application: pick the board, wire HAL drivers, core and UI, and run.

main.py (the only source file, which MicroPython runs by name at boot) mounts the ROMFS image
in the simulator and calls run() here, so this code runs in place from flash like every other
module: nothing of it is compiled into the heap.

Nothing below imports a driver except through boards.load(): core never sees hardware.
"""

import sys


def _config(argv):
    if len(argv) > 1:
        cfg = _read_config(argv[1])
        cfg.setdefault("board", "sim")
        return cfg
    try:
        return _read_config("/board.json")
    except OSError:
        return {"board": "headless"}


def _read_config(path):
    """The JSON object in `path`; a damaged file is named (a bare "syntax error in JSON" said
    neither which file nor what to do)."""
    import json

    with open(path) as f:
        text = f.read()
    try:
        cfg = json.loads(text)
    except ValueError as e:
        cfg = e
    if not isinstance(cfg, dict):
        why = "damaged (%s)" % cfg if isinstance(cfg, ValueError) else "not a JSON object"
        raise ValueError("%s is %s: write it again (hubi token deploy)" % (path, why))
    return cfg


def build(cfg):
    """Board, wallet, link server, UI and the Token app from a config dict.

    What is imported here stays in the heap (core.mark_resident); everything else is imported
    for one step of one request and released after it (core/__init__.py)."""
    import boards
    import core
    from core.keystore import Keystore
    from core.token import Token
    from core.wallet import Wallet

    from hubi_core.link import Server

    board = boards.load(cfg.get("board", "sim"), cfg)
    s = board.settings
    ks = Keystore(board.storage, board.rng, board.clock, s["kdf_iterations"], s["pin_backoff_ms"])
    wallet = Wallet(board.storage, ks, board.clock, s)
    server = Server(board.transport, name="hubi-token " + board.name, max_message=s["max_message"])
    ui = None
    if board.display is not None:
        from ui.screens import Ui

        ui = Ui(board.display, board.input, board.clock, s)
    clock, bname, log = board.clock, board.name, board.log
    del board, s, boards
    for name in list(sys.modules):  # the board is wired: its modules and tables can go
        if name == "boards" or name.startswith("boards."):
            del sys.modules[name]
    core.mark_resident()
    # core.fault.boot, inline: at boot the codec is in the heap, and a 96 KB heap has little
    # room beside it for one more module
    try:
        wallet.boot()
    except OSError as e:  # served all the same: every request says what is wrong (core.fault)
        wallet.account = None
        wallet.fault = e
    core.release()
    if wallet.provisioned:  # a ctr.bin rolled back below the serials used (core.serials)
        from core.serials import past_kept

        try:
            moved = past_kept(wallet)
        except OSError as e:
            wallet.account = None
            wallet.fault = e
            moved = None
        if moved:
            log(moved)
        core.release()
    if wallet.fault is not None:
        log("storage fault:", repr(wallet.fault))
    # the names a payment interns are interned now, while the heap is empty (core.warm_up),
    # one step's modules at a time as a payment loads them
    core.warm_up(
        ("core.hand", "core.pay", "hubi_core.codec"),
        ("core.trust", "hubi_core.cpk", "hubi_core.aesgcm", "core.paysign"),
        ("core.handx", "core.notes", "core.sigcheck", "hubi_core.ecies"),
    )
    if ui is not None:
        core.warm_up(("core.tui",), ("ui.qrview",))
    if not wallet.provisioned:
        core.warm_up(("core.prov", "hubi_core.consortium", "hubi_core.ecies", "hubi_core.tokenmsg"))
    return Token(wallet, server, ui, clock, bname, log)


def main(argv=None):
    cfg = _config(sys.argv if argv is None else argv)
    if cfg.get("maintenance_check", True) and cfg.get("board") not in ("sim", None):
        import boards

        mod = boards.module(cfg["board"])
        if getattr(mod, "maintenance", None) and mod.maintenance():
            print("hubi: maintenance mode (button held at boot): REPL left free")
            return None
    token = build(cfg)
    token.log("ready:", token.board, "provisioned" if token.wallet.provisioned else "blank")
    token.run()


def run():
    try:
        main()
    except KeyboardInterrupt:
        pass
    except BaseException as e:  # noqa: BLE001 - report on stderr: stdout may be the link
        sys.print_exception(e, sys.stderr)
        raise SystemExit(1) from None
